"""The weighted draw: reproducible from its published seed, weighted by points, verifiable."""

from __future__ import annotations

import hashlib
import io
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.campaigns import draw
from services.campaigns.cli import check, check_campaign, verify_draw_main
from services.campaigns.domain import Rules, Standing
from services.campaigns.usecases.outcome import ended_event, final_result
from shared.events import Audience, CampaignEnded, CampaignStarted, example_event
from shared.events.campaigns import EXAMPLE_COMMITMENT

entrant_lists = st.lists(
    st.builds(
        draw.Entrant,
        member_id=st.text("abcdef0123", min_size=1, max_size=6),
        points=st.sampled_from([0.5, 1.0, 2.0, 7.25, 40.0]),
    ),
    max_size=15,
    unique_by=lambda e: e.member_id,
)


@given(entrant_lists, st.integers(0, 8), st.randoms(use_true_random=False))
def test_the_draw_is_reproducible_from_the_published_seed(entrants, count, rnd):
    seed = draw.seed_for("c1", entrants)
    shuffled = list(entrants)
    rnd.shuffle(shuffled)
    assert draw.seed_for("c1", shuffled) == seed
    assert draw.draw(shuffled, seed, count) == draw.draw(entrants, seed, count)


@given(entrant_lists, st.integers(0, 8))
def test_the_draw_picks_distinct_entrants_ranked_in_draw_order(entrants, count):
    winners = draw.draw(entrants, draw.seed_for("c1", entrants), count)
    assert len(winners) == min(count, len(entrants))
    assert len({w.member_id for w in winners}) == len(winners)
    assert {w.member_id for w in winners} <= {e.member_id for e in entrants}
    assert [w.rank for w in winners] == list(range(1, len(winners) + 1))


def test_the_seed_depends_on_the_campaign_and_on_every_standing():
    entrants = [draw.Entrant("a", 3), draw.Entrant("b", 1)]
    seed = draw.seed_for("c1", entrants)
    assert draw.seed_for("c2", entrants) != seed
    assert draw.seed_for("c1", [draw.Entrant("a", 3), draw.Entrant("b", 2)]) != seed
    assert draw.canonical("c1", entrants) == (
        b'{"campaign_id":"c1","standings":[["a","3.00"],["b","1.00"]]}'
    )


def test_the_draw_is_weighted_by_points():
    entrants = [draw.Entrant("heavy", 95), draw.Entrant("light", 5)]
    firsts = [draw.draw(entrants, f"seed-{i}", 1)[0].member_id for i in range(400)]
    share = firsts.count("heavy") / len(firsts)
    assert 0.88 < share < 0.99


def _ended_campaign(rule: str = "draw", secret: bytes | None = None) -> dict:
    """An ended campaign's resource; without `secret` it started before commitments (v1)."""
    rules = Rules(
        campaign_id="c_test",
        audience=Audience(),
        scoring={"post-created": 1},
        winners=2,
        winner_rule=rule,
    )  # type: ignore[arg-type]
    standings = [
        Standing("m1", 5, 10),
        Standing("m2", 3, 5),
        Standing("m3", 9, 7),
        Standing("m4", 0, 0),
    ]
    return {
        "campaign_id": "c_test",
        "status": "ended",
        "winners": 2,
        "winner_rule": rule,
        "result": final_result(rules, standings, secret),
    }


def test_final_result_of_a_draw_publishes_the_entrants_with_points_and_a_verifiable_seed():
    campaign = _ended_campaign()
    published = campaign["result"]["draw"]
    assert [e["member_id"] for e in published["entrants"]] == ["m1", "m2", "m3"]
    assert campaign["result"]["participants"] == 3
    assert check_campaign(campaign).ok


def test_a_tampered_draw_does_not_verify():
    campaign = _ended_campaign()
    campaign["result"]["draw"]["entrants"][0]["points"] = 50
    check = check_campaign(campaign)
    assert not check.ok and "seed differs" in check.problems[0]
    campaign = _ended_campaign()
    campaign["result"]["winners"].reverse()
    assert not check_campaign(campaign).ok


def test_verify_draw_command_fetches_the_campaign_and_reports_a_match():
    campaign = _ended_campaign()
    seen = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("Authorization")
        seen["path"] = request.url.path
        return httpx.Response(200, content=json.dumps(campaign))

    out = io.StringIO()
    code = verify_draw_main(
        ["c_test"],
        environ={"SARAFAN_API_TOKEN": "tok"},
        out=out,
        transport=httpx.MockTransport(answer),
    )
    assert code == 0, out.getvalue()
    assert "MATCH" in out.getvalue()
    assert seen == {"auth": "Bearer tok", "path": "/v1/campaigns/c_test"}


def test_verify_draw_command_says_why_it_cannot_check_a_top_campaign():
    campaign = _ended_campaign("top")
    out = io.StringIO()
    code = verify_draw_main(
        ["c_test"],
        environ={"SARAFAN_API_TOKEN": "tok"},
        out=out,
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=json.dumps(campaign))),
    )
    assert code == 2
    assert "no published draw" in out.getvalue()


# -- sarafan-draw-v2: commit at the start, reveal at the end -------------------------------------

secrets_ = st.binary(min_size=draw.SECRET_BYTES, max_size=draw.SECRET_BYTES)


@given(secrets_, entrant_lists, st.integers(0, 8), st.randoms(use_true_random=False))
def test_the_v2_winners_are_a_pure_function_of_the_secret_and_the_standings(
    secret, entrants, count, rnd
):
    seed = draw.seed_v2(secret, "c1", entrants)
    shuffled = list(entrants)
    rnd.shuffle(shuffled)
    assert draw.seed_v2(secret, "c1", shuffled) == seed
    assert draw.draw(shuffled, seed, count) == draw.draw(entrants, seed, count)


@given(secrets_, secrets_, entrant_lists)
def test_the_v2_seed_cannot_be_computed_from_what_is_public_before_the_end(one, other, entrants):
    """Before the end everyone knows the campaign, the standings (leaderboard) and the
    commitment; the seed is none of what they give, and another secret gives another seed."""
    seed = draw.seed_v2(one, "c1", entrants)
    standings = draw.canonical("c1", entrants)
    commitment = draw.commitment_of(one)
    assert seed != draw.seed_for("c1", entrants)  # v1: the standings alone
    assert seed != hashlib.sha256(bytes.fromhex(commitment) + standings).hexdigest()
    assert seed != hashlib.sha256(commitment.encode() + standings).hexdigest()
    if one != other:
        assert draw.seed_v2(other, "c1", entrants) != seed


def test_the_v2_bytes_are_the_documented_ones():
    secret = bytes(range(32))
    entrants = [draw.Entrant("b", 1), draw.Entrant("a", 3)]
    standings = b'{"campaign_id":"c1","standings":[["a","3.00"],["b","1.00"]]}'
    assert draw.commitment_of(secret) == hashlib.sha256(secret).hexdigest()
    assert draw.seed_v2(secret, "c1", entrants) == hashlib.sha256(secret + standings).hexdigest()
    assert draw.standings_sha256("c1", entrants) == hashlib.sha256(standings).hexdigest()
    assert draw.secret_from_hex(secret.hex()) == secret
    for bad in (secret.hex().upper(), secret.hex()[:-2], "zz" * 32, None, 7):
        with pytest.raises(ValueError):
            draw.secret_from_hex(bad)


def test_the_example_events_re_run_to_their_published_winners():
    # The catalogue's and the docs' worked example: the two events alone verify.
    started = example_event(CampaignStarted).model_dump(mode="json")
    ended = example_event(CampaignEnded).model_dump(mode="json")
    checked = check(started=started, ended=ended)
    assert checked.ok, checked.problems
    assert checked.procedure == draw.PROCEDURE_V2
    assert [w.member_id for w in checked.winners] == ["m_01"]


SECRET = bytes.fromhex("5a" * 32)


def _v2_campaign(rule: str = "draw") -> dict:
    campaign = _ended_campaign(rule, secret=SECRET)
    campaign["draw_commitment"] = draw.commitment_of(SECRET)
    return campaign


def test_final_result_of_a_v2_draw_reveals_the_secret_committed_to():
    campaign = _v2_campaign()
    published = campaign["result"]["draw"]
    assert published["procedure"] == "sarafan-draw-v2"
    assert published["secret"] == SECRET.hex()
    assert published["commitment"] == campaign["draw_commitment"]
    entrants = [draw.Entrant(e["member_id"], e["points"]) for e in published["entrants"]]
    assert published["seed"] == draw.seed_v2(SECRET, "c_test", entrants)
    result = check_campaign(campaign)
    assert result.ok, result.problems
    assert any("commitment" in line for line in result.checked)


def test_a_v2_draw_with_another_secret_or_standings_does_not_verify():
    campaign = _v2_campaign()
    campaign["result"]["draw"]["secret"] = "6b" * 32
    problems = check_campaign(campaign).problems
    assert problems[0].startswith("commitment differs: SHA-256 of the revealed secret is ")
    assert any(p.startswith("seed differs") for p in problems)

    campaign = _v2_campaign()
    campaign["result"]["draw"]["entrants"][0]["points"] = 50
    problems = check_campaign(campaign).problems
    assert any(p.startswith("standings differ") for p in problems)
    assert any(p.startswith("seed differs") for p in problems)

    campaign = _v2_campaign()
    campaign["result"]["winners"].reverse()
    assert [p.split(":")[0] for p in check_campaign(campaign).problems] == ["winners differ"]


def test_a_secret_and_commitment_both_replaced_after_the_start_do_not_verify():
    """The service could rewrite its own document; campaign-started was published at the
    start, and its commitment is the one that counts."""
    original = _v2_campaign()
    started = {"type": "campaign-started", "data": {"campaign_id": "c_test"}}
    started["data"]["draw_commitment"] = original["draw_commitment"]
    other = bytes.fromhex("77" * 32)
    rewritten = _ended_campaign(secret=other)
    rewritten["draw_commitment"] = draw.commitment_of(other)
    assert check_campaign(rewritten).ok  # consistent on its own
    result = check(campaign=rewritten, started=started)
    assert not result.ok
    assert result.problems[0].startswith("commitments differ: campaign-started has ")
    assert any(p.startswith("commitment differs") for p in result.problems)


def test_a_v2_draw_passed_off_as_v1_or_without_its_commitment_does_not_verify():
    campaign = _v2_campaign()
    campaign["result"]["draw"]["procedure"] = "sarafan-draw-v1"
    assert any("committed to a secret" in p for p in check_campaign(campaign).problems)
    campaign = _v2_campaign()
    del campaign["draw_commitment"]
    assert any("no commitment" in p for p in check_campaign(campaign).problems)


def test_campaign_ended_carries_the_standings_or_only_their_digest_when_too_many():
    rules = Rules("c_big", Audience(), {"post-created": 1}, winners=3, winner_rule="draw")
    few = [Standing(f"m_{i:04}", 1 + i % 7, i) for i in range(50)]
    many = [Standing(f"m_{i:032x}", 1 + i % 7, i) for i in range(8000)]
    end = {"by_hand": False, "key_id": None, "early": False, "frozen_ms": 0}
    for standings, carried in ((few, True), (many, False)):
        result = final_result(rules, standings, SECRET)
        event = ended_event(rules, result, end, 0)
        published = event.data["draw"]
        assert (published["standings"] is not None) is carried
        assert published["entrants"] == len(standings) and published["draws"] == 3
        assert published["standings_sha256"] == result["draw"]["standings_sha256"]
        assert len(event.to_json()) < 512 * 1024


def _files(tmp_path, **events) -> list[str]:
    args = []
    for name, event in events.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(event))
        args += [f"--{name}", str(path)]
    return args


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the command asked the service: {request.url}")


def test_verify_draw_checks_the_two_events_alone_without_asking_the_service(tmp_path):
    started = example_event(CampaignStarted).model_dump(mode="json")
    ended = example_event(CampaignEnded).model_dump(mode="json")
    out = io.StringIO()
    args = ["c_01", *_files(tmp_path, started=started, ended=ended)]
    code = verify_draw_main(args, environ={}, out=out, transport=httpx.MockTransport(_refuse))
    assert code == 0, out.getvalue()
    text = out.getvalue()
    assert "procedure sarafan-draw-v2" in text and "MATCH" in text
    assert f"ok: SHA-256 of the revealed secret is the commitment {EXAMPLE_COMMITMENT}" in text

    ended["data"]["draw"]["standings"][1][1] = "60.00"  # one more post for m_02
    out = io.StringIO()
    args = ["c_01", *_files(tmp_path, started=started, ended=ended)]
    code = verify_draw_main(args, environ={}, out=out, transport=httpx.MockTransport(_refuse))
    assert code == 1
    assert "MISMATCH: standings differ" in out.getvalue()
    assert "MISMATCH: seed differs" in out.getvalue()


def test_verify_draw_of_an_ended_event_without_standings_reads_them_from_the_service(tmp_path):
    campaign = _v2_campaign()
    rules = Rules("c_test", Audience(), {"post-created": 1}, winners=2, winner_rule="draw")
    end = {"by_hand": False, "key_id": None, "early": False, "frozen_ms": 0}
    ended = ended_event(rules, campaign["result"], end, 0).model_dump(mode="json")
    del ended["data"]["draw"]["standings"]
    started = {"type": "campaign-started", "data": {"campaign_id": "c_test"}}
    started["data"]["draw_commitment"] = campaign["draw_commitment"]
    out = io.StringIO()
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=json.dumps(campaign)))
    args = ["c_test", *_files(tmp_path, started=started, ended=ended)]
    code = verify_draw_main(args, environ={"SARAFAN_API_TOKEN": "t"}, out=out, transport=transport)
    assert code == 0, out.getvalue()
    assert "ok: standings hash to the published" in out.getvalue()

"""The weighted draw: reproducible from its published seed, weighted by points, verifiable."""

from __future__ import annotations

import io
import json

import httpx
from hypothesis import given
from hypothesis import strategies as st

from services.campaigns import draw
from services.campaigns.cli import check_campaign, verify_draw_main
from services.campaigns.domain import Rules, Standing
from services.campaigns.usecases.lifecycle import final_result
from shared.events import Audience

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


def _ended_campaign(rule: str = "draw") -> dict:
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
        "result": final_result(rules, standings),
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

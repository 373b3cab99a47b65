"""Engagement's use cases on memory (no servers): what each writes, raises and refuses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.engagement import usecases
from services.engagement.contributions import (
    DEFAULT_REACTIONS,
    Conflict,
    Forbidden,
    NotFound,
    Refused,
)
from shared.events import (
    CommentAdded,
    MemberJoined,
    MemberLeft,
    PostCreated,
    ReferralMade,
    new_event,
)
from tests.fakes.engagement import OnMemory, engagement_on_memory

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
async def e() -> OnMemory:
    on_memory = engagement_on_memory()
    await on_memory.store.ensure_indexes()
    for member in ("asker", "helper"):
        await on_memory.member(member, region="kazan")
    await on_memory.member("staff", roles=["staff"])
    await on_memory.member("gone", status="left")
    return on_memory


async def post(e: OnMemory, post_id: str = "p1", kind: str = "question", **more) -> usecases.Posted:
    cmd = usecases.NewPost(post_id, more.pop("author_id", "asker"), kind, "Where?", "", [])
    return await e.at(more.pop("now", NOW)).posts.create_post(cmd)


async def comment(e: OnMemory, comment_id: str, author: str = "helper", post_id: str = "p1"):
    cmd = usecases.NewComment(comment_id, post_id, author, "Gate 2")
    return await e.at(NOW + timedelta(minutes=5)).posts.add_comment(cmd)


async def accept(e: OnMemory, comment_id: str, by: str = "asker") -> usecases.Answer:
    cmd = usecases.AcceptAnswer("p1", comment_id, by)
    return await e.at(NOW + timedelta(hours=1)).posts.accept_answer(cmd)


# -- posts, comments, reactions ------------------------------------------------------------------


async def test_a_post_is_stored_with_its_post_created_once_however_often_it_is_sent(e) -> None:
    cmd = usecases.NewPost("p1", "asker", "question", "Where?", "", [" Park", "cleanup", "park"])
    posted = await e.at(NOW).posts.create_post(cmd)
    assert posted.created and posted.post["tags"] == ["park", "cleanup"]  # order kept
    assert posted.post["open"] == 1 and posted.post["region"] == "kazan"
    again = await e.at(NOW + timedelta(seconds=5)).posts.create_post(cmd)
    assert not again.created and again.post["created_ms"] == posted.post["created_ms"]
    assert e.relay.types() == ["post-created"]


async def test_only_current_members_write(e) -> None:
    with pytest.raises(Refused) as unknown:
        await post(e, author_id="nobody")
    with pytest.raises(Refused) as left:
        await post(e, author_id="gone")
    assert (unknown.value.code, left.value.code) == ("unknown_member", "member_left")
    assert e.relay.types() == []


async def test_a_comment_names_the_post_author_and_a_tombstone_takes_none(e) -> None:
    await post(e)
    doc, author = await comment(e, "c1")
    assert (doc["post_author_id"], author["_id"]) == ("asker", "helper")
    await e.store.posts.update_one({"_id": "p1"}, {"$set": {"author_id": None}})  # erased
    with pytest.raises(NotFound):
        await comment(e, "c2")
    assert e.relay.types() == ["post-created", "comment-added"]


async def react(e: OnMemory, reaction: str, member: str = "helper", **more):
    cmd = usecases.NewReaction("p1", member, reaction)
    posts = e.at(NOW).posts
    if "allowed" in more:  # another community's reactions
        posts = usecases.Posts(e.store, e.unit_of_work, e.clock, more["allowed"])
    return await posts.add_reaction(cmd)


async def test_a_member_reacts_once_to_a_post_and_the_same_reaction_again_changes_nothing(
    e,
) -> None:
    await post(e)
    made = [(await react(e, "+1"))[1], (await react(e, "+1"))[1]]
    assert made == [True, False]
    with pytest.raises(Conflict) as other:
        await react(e, "thanks")
    assert (other.value.code, other.value.details) == ("already_reacted", {"reaction": "+1"})
    assert e.relay.types() == ["post-created", "reaction-added"]


async def test_only_the_communitys_reactions_are_taken_in_their_configured_spelling(e) -> None:
    await post(e)
    with pytest.raises(Refused) as unknown:
        await react(e, "lol")
    assert unknown.value.code == "unknown_reaction"
    assert unknown.value.details == {"allowed": list(DEFAULT_REACTIONS)}
    assert e.relay.types() == ["post-created"]
    # Case and how an emoji is drawn (variation selector, skin tone) do not make another one.
    reaction, made = await react(e, "THANKS")
    assert (reaction["reaction"], made) == ("thanks", True)
    reaction, _ = await react(e, "\u2764", member="asker")  # ❤ without U+FE0F
    assert reaction["reaction"] == "\u2764\ufe0f"
    reaction, _ = await react(e, "wave", member="staff", allowed=("wave",))
    assert reaction["reaction"] == "wave"


# -- accepted answers ----------------------------------------------------------------------------


async def test_the_asker_accepts_another_members_answer_once(e) -> None:
    await post(e)
    await comment(e, "c1")
    await comment(e, "c2")
    answer = await accept(e, "c1")
    assert (answer.answerer_id, answer.seconds_to_answer) == ("helper", 300)
    assert await accept(e, "c1") == answer  # the same answer again: no change
    with pytest.raises(Refused) as other:
        await accept(e, "c2")
    assert other.value.code == "already_accepted"
    stored = await e.store.post("p1")
    assert (stored["accepted_comment_id"], stored["seconds_to_answer"]) == ("c1", 300)
    assert e.relay.types().count("answer-accepted") == 1


async def test_accepting_is_refused_off_the_rules(e) -> None:
    await post(e)
    await post(e, "p2", kind="post")
    await comment(e, "mine", author="asker")
    await comment(e, "c1")
    await comment(e, "elsewhere", post_id="p2")
    with pytest.raises(Forbidden):
        await accept(e, "c1", by="helper")
    for comment_id, code in [
        ("mine", "not_an_answer"),
        ("elsewhere", "unknown_comment"),
        ("missing", "unknown_comment"),
    ]:
        with pytest.raises(Refused) as refused:
            await accept(e, comment_id)
        assert refused.value.code == code
    with pytest.raises(Refused) as not_a_question:
        await e.at(NOW).posts.accept_answer(usecases.AcceptAnswer("p2", "elsewhere", "asker"))
    assert not_a_question.value.code == "not_a_question"
    assert "answer-accepted" not in e.relay.types()


# -- volunteer hours -----------------------------------------------------------------------------


async def hours(e: OnMemory, entry_id: str = "h1", day: date = date(2026, 11, 20)):
    cmd = usecases.NewHours(entry_id, "helper", 3.0, "Cleanup", day, "")
    return await e.at(NOW).hours.record_hours(cmd)


async def decide(e: OnMemory, by: str, status: str = "approved", record: str | None = None):
    cmd = usecases.DecideHours("h1", by, status, "", record)
    return await e.at(NOW).hours.decide_hours(cmd)


async def test_hours_are_pending_until_staff_decides_once(e) -> None:
    entry = await hours(e)
    assert entry["status"] == "pending"
    with pytest.raises(Refused) as future:
        await hours(e, "h2", date(2026, 12, 1))
    assert future.value.code == "future_date"
    assert (await decide(e, "staff", record="/v1/hours/h1/approve:k"))["status"] == "approved"
    assert (await decide(e, "staff"))["status"] == "approved"  # the same decision again
    with pytest.raises(Conflict):
        await decide(e, "staff", "rejected")
    assert e.relay.types() == ["hours-approved"]
    noted = await e.store.decision_requests.find_one({"_id": "/v1/hours/h1/approve:k"})
    assert noted["member_id"] == "helper"  # erasure finds the kept answer by the member


async def test_only_staff_or_coordinators_decide_and_never_on_their_own_hours(e) -> None:
    await hours(e)
    with pytest.raises(Forbidden):
        await decide(e, "asker")
    await e.store.members.update_one({"_id": "helper"}, {"$set": {"roles": ["coordinator"]}})
    with pytest.raises(Forbidden):
        await decide(e, "helper")
    with pytest.raises(NotFound):
        cmd = usecases.DecideHours("nope", "staff", "approved", "")
        await e.at(NOW).hours.decide_hours(cmd)
    assert e.relay.types() == []


# -- events --------------------------------------------------------------------------------------


def joined(member_id: str, **more) -> MemberJoined:
    return MemberJoined(
        member_id=member_id, display_name=member_id, region="tver", roles=["volunteer"],
        locale="ru", timezone="Europe/Moscow", joined_at=NOW - timedelta(days=1),
        contacts={"email": f"{member_id}@example.org"}, consent={"terms": True}, **more,
    )  # fmt: skip


async def test_member_events_keep_the_projection_the_counters_and_the_joined_fact(e) -> None:
    batch = [(new_event(d), d) for d in (joined("m1"), joined("m2", referred_by="m1"))]
    await e.at(NOW).members.apply(batch)
    await e.at(NOW).members.apply(batch)  # redelivered
    assert (await e.store.member("m2"))["referred_by"] == "m1"
    totals = await e.store.counters.totals()
    assert (totals["members"], totals["joins"], totals["referred"]) == (2, 2, 1)
    standing = (await e.store.standings(["m1"]))["m1"]
    assert (standing["points_total"], standing["region"], standing["active"]) == (1, "tver", 1)


async def test_an_erasure_erases_the_stream_and_leaves_tombstones(e) -> None:
    join = joined("vera")
    await e.at(NOW).members.apply([(new_event(join), join)])
    await post(e, "vp", author_id="vera")
    left = MemberLeft(member_id="vera", erase=True, left_at=NOW)
    await e.at(NOW).members.apply([(new_event(left), left)])
    assert e.erased == [
        ("ENGAGEMENT", "engagement.*.vera"),
        ("ENGAGEMENT", "engagement.post-created.vp"),
    ]
    tombstone = await e.store.post("vp")
    assert (tombstone["author_id"], tombstone["title"]) == (None, "")
    assert set((await e.store.standings(["vera"]))["vera"]) == {"_id", "erased", "version"}
    assert (await e.store.member("vera"))["status"] == "erased"


async def test_activity_scores_its_authors_and_notes_first_answers(e) -> None:
    await post(e)
    created = PostCreated(
        post_id="p1", author_id="asker", kind="question", title="Where?", created_at=NOW
    )
    answered = CommentAdded(
        comment_id="c1", post_id="p1", author_id="helper", post_author_id="asker",
        created_at=NOW + timedelta(minutes=2),
    )  # fmt: skip
    batch = [(new_event(d, time=NOW), d) for d in (created, answered)]
    await e.at(NOW + timedelta(minutes=3)).activity.record(batch)
    await e.at(NOW + timedelta(minutes=3)).activity.record(batch)
    standings = await e.store.standings(["asker", "helper"])
    assert {m: s["points_total"] for m, s in standings.items()} == {"asker": 3, "helper": 2}
    question = await e.store.post("p1")
    assert question["wait_ms"] == 120_000 and "open" not in question


# -- referrals count once the friend is active ---------------------------------------------------


def posted(post_id: str, author: str, at: datetime) -> tuple:
    data = PostCreated(post_id=post_id, author_id=author, kind="post", title="Hi", created_at=at)
    return new_event(data, time=at), data


async def referrer_points(e: OnMemory, member_id: str = "anna") -> float:
    standing = (await e.store.standings([member_id])).get(member_id) or {}
    return standing.get("points_total", 0)


async def test_a_referral_earns_nothing_until_the_friend_posts_then_fifteen_once_ever(e) -> None:
    made = ReferralMade(
        referral_id="r1", referrer_id="anna", referred_id="boris", code="KQX7MAC", at=NOW
    )
    members = [joined("anna"), joined("boris", referred_by="anna"), made]
    batch = [(new_event(d), d) for d in members]
    await e.at(NOW).members.apply(batch)
    assert await referrer_points(e) == 1  # joined only: the sign-up alone is worth nothing
    first = posted("b1", "boris", NOW + timedelta(hours=1))
    later = posted("b2", "boris", NOW + timedelta(days=40))
    await e.at(NOW + timedelta(hours=1)).activity.record([first])
    await e.at(NOW + timedelta(hours=1)).activity.record([first])
    assert await referrer_points(e) == 1 + 15
    # A post weeks later, past the redelivery horizon, and the friend's marker lost: still once.
    await e.store.members.update_one({"_id": "boris"}, {"$unset": {"referral_counted_ms": ""}})
    await e.at(NOW + timedelta(days=40)).activity.record([later])
    standing = (await e.store.standings(["anna"]))["anna"]
    assert (standing["points_total"], standing["counts"]["referral"]) == (16, 1)
    assert (await e.store.member("boris"))["referral_counted_ms"]


async def test_a_friend_who_left_before_doing_anything_never_makes_the_referral_count(e) -> None:
    members = [joined("anna"), joined("boris", referred_by="anna")]
    await e.at(NOW).members.apply([(new_event(d), d) for d in members])
    left = MemberLeft(member_id="boris", erase=False, left_at=NOW)
    await e.at(NOW).members.apply([(new_event(left), left)])
    # An event of theirs that was still on its way counts for nothing.
    late = posted("b1", "boris", NOW - timedelta(minutes=1))
    await e.at(NOW).activity.record([late])
    assert await referrer_points(e) == 1

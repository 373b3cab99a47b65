"""Posts, comments, reactions and accepted answers over HTTP, and the events they publish."""

from __future__ import annotations

from datetime import UTC, datetime

from services.engagement.contributions import DEFAULT_REACTIONS
from shared.events import MemberLeft
from tests.helpers import wait_until
from tests.integration.test_engagement_support import (
    collect,
    engagement_of,
    join,
    publish,
    wait_points,
)


def by_type(seen: list[dict], kind: str) -> list[dict]:
    return [e for e in seen if e["type"] == kind]


async def test_post_comment_reaction_and_accepted_answer_publish_their_events(services, nc):
    async with (
        collect(nc, "engagement.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        asker = await join(members, http, display_name="Asker", region="kazan")
        helper = await join(members, http, display_name="Helper")

        r = await http.post("/v1/posts", json={
            "author_id": asker, "kind": "question", "title": "Where do we meet?",
            "body": "Saturday cleanup", "tags": ["Cleanup", "park"],
        })  # fmt: skip
        assert r.status_code == 201, r.text
        post = r.json()
        pid = post["post_id"]
        assert (post["kind"], post["tags"], post["author_name"]) == (
            "question", ["cleanup", "park"], "Asker",
        )  # fmt: skip

        r = await http.post(
            f"/v1/posts/{pid}/comments", json={"author_id": helper, "body": "Gate 2"}
        )
        assert r.status_code == 201, r.text
        comment_id = r.json()["comment_id"]
        r = await http.post(
            f"/v1/posts/{pid}/reactions", json={"member_id": helper, "reaction": "+1"}
        )
        assert r.status_code == 201, r.text
        r = await http.post(f"/v1/posts/{pid}/accept", json={"comment_id": comment_id, "by": asker})
        assert r.status_code == 200, r.text
        assert r.json()["answerer_id"] == helper

        await wait_until(lambda: len(by_type(seen, "answer-accepted")) == 1)
        [created] = by_type(seen, "post-created")
        assert created["subject"] == pid and created["source"] == "/services/engagement"
        assert created["data"]["author_id"] == asker and created["data"]["kind"] == "question"
        [added] = by_type(seen, "comment-added")
        assert added["data"] | {"created_at": None} == {
            "comment_id": comment_id, "post_id": pid, "author_id": helper,
            "post_author_id": asker, "created_at": None,
        }  # fmt: skip
        [reaction] = by_type(seen, "reaction-added")
        assert (reaction["data"]["member_id"], reaction["data"]["post_author_id"]) == (
            helper,
            asker,
        )
        [accepted] = by_type(seen, "answer-accepted")
        assert accepted["data"]["asker_id"] == asker
        assert accepted["data"]["answerer_id"] == helper
        assert accepted["data"]["seconds_to_answer"] >= 0

        got = (await http.get(f"/v1/posts/{pid}")).json()
        assert got["comments"] == 1 and got["reactions"] == {"+1": 1}
        assert got["accepted_comment_id"] == comment_id
        comments = (await http.get(f"/v1/posts/{pid}/comments")).json()["items"]
        assert [(c["comment_id"], c["author_name"]) for c in comments] == [(comment_id, "Helper")]


async def test_activity_scores_by_the_spec_weights(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        a = await join(members, http)
        b = await join(members, http)
        q = (
            await http.post("/v1/posts", json={"author_id": a, "kind": "question", "title": "?"})
        ).json()
        await http.post("/v1/posts", json={"author_id": a, "kind": "story", "title": "A story"})
        c = (
            await http.post(
                f"/v1/posts/{q['post_id']}/comments", json={"author_id": b, "body": "!"}
            )
        ).json()
        await http.post(
            f"/v1/posts/{q['post_id']}/reactions", json={"member_id": b, "reaction": "heart"}
        )
        await http.post(
            f"/v1/posts/{q['post_id']}/accept", json={"comment_id": c["comment_id"], "by": a}
        )

        # a: joined 1 + question 3 + story 5 + reaction received 1
        # b: joined 1 + comment 2 + answer accepted 10
        got_a = await wait_points(http, a, 10)
        got_b = await wait_points(http, b, 13)
        assert got_a["points_total"] == 10 and got_b["points_total"] == 13
        assert got_a["score"] == 10.0  # no time to decay
        assert got_a["counts"] == {
            "posts": 1, "questions": 1, "comments": 0, "reactions_received": 1,
            "reactions_given": 0, "answers_accepted": 0, "referrals": 0,
        }  # fmt: skip
        assert got_b["counts"]["answers_accepted"] == 1 and got_b["counts"]["reactions_given"] == 1
        # Levels are settled right after the points are written (a second write): wait for it.
        for member in (a, b):
            await wait_until(
                lambda m=member: _level_is(http, m, "participant"), message="level not settled"
            )
        assert got_a["streak_days"] == 1 and got_a["last_active_at"] is not None


async def test_a_member_reacts_once_per_post_the_same_reaction_again_is_200(services, nc):
    async with (
        collect(nc, "engagement.reaction-added.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        author = await join(members, http)
        fan = await join(members, http)
        pid = (await http.post("/v1/posts", json={"author_id": author, "title": "Hi"})).json()[
            "post_id"
        ]

        body = {"member_id": fan, "reaction": "thanks"}
        first = await http.post(f"/v1/posts/{pid}/reactions", json=body)
        again = await http.post(f"/v1/posts/{pid}/reactions", json=body)
        other = await http.post(f"/v1/posts/{pid}/reactions", json={**body, "reaction": "heart"})

        assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
        assert again.json() == first.json()
        assert other.json()["error"]["code"] == "already_reacted"
        assert other.json()["error"]["details"] == {"reaction": "thanks"}
        await wait_points(http, author, 1 + 5 + 1)
        await wait_until(lambda: len(seen) == 1)
        assert (await http.get(f"/v1/posts/{pid}")).json()["reactions"] == {"thanks": 1}


async def test_twenty_reaction_strings_from_one_member_earn_the_author_one_point(services, nc):
    async with (
        collect(nc, "engagement.reaction-added.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        author, fan, sentinel = [await join(members, http) for _ in range(3)]
        pid = (await http.post("/v1/posts", json={"author_id": author, "title": "Hi"})).json()[
            "post_id"
        ]
        allowed = list(DEFAULT_REACTIONS)
        invented = [f"wow{i}" for i in range(20 - len(allowed))]
        answers = []
        for reaction in [*invented[:6], *allowed, *invented[6:]]:
            r = await http.post(
                f"/v1/posts/{pid}/reactions", json={"member_id": fan, "reaction": reaction}
            )
            answers.append((reaction, r.status_code, r.json()))
        refused = [(reaction, body) for reaction, status, body in answers if status == 422]
        assert [reaction for reaction, _ in refused] == invented
        for _, body in refused:
            assert body["error"]["code"] == "unknown_reaction"
            assert body["error"]["details"] == {"allowed": allowed}
        statuses = [status for reaction, status, _ in answers if reaction in allowed]
        assert statuses == [201] + [409] * (len(allowed) - 1)
        # Another member's reaction after them all: once it counts, every earlier one did.
        r = await http.post(
            f"/v1/posts/{pid}/reactions", json={"member_id": sentinel, "reaction": "+1"}
        )
        assert r.status_code == 201
        got = await wait_points(http, author, 1 + 5 + 1 + 1)
        assert (got["points_total"], got["counts"]["reactions_received"]) == (8, 2)
        await wait_until(lambda: len(seen) == 2)
        assert sorted(e["data"]["member_id"] for e in seen) == sorted([fan, sentinel])


async def test_unknown_member_is_422_and_unknown_post_is_404(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        a = await join(members, http)
        pid = (await http.post("/v1/posts", json={"author_id": a, "title": "Hi"})).json()["post_id"]

        r = await http.post("/v1/posts", json={"author_id": "nobody", "title": "x"})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_member")
        r = await http.post(f"/v1/posts/{pid}/comments", json={"author_id": "nobody", "body": "x"})
        assert r.status_code == 422
        r = await http.post(
            f"/v1/posts/{pid}/reactions", json={"member_id": "nobody", "reaction": "like"}
        )
        assert r.status_code == 422
        for path, body in [
            ("comments", {"author_id": a, "body": "x"}),
            ("reactions", {"member_id": a, "reaction": "like"}),
            ("accept", {"comment_id": "c", "by": a}),
        ]:
            r = await http.post(f"/v1/posts/missing/{path}", json=body)
            assert r.status_code == 404, (path, r.text)
        assert (await http.get("/v1/posts/missing")).status_code == 404
        r = await http.post("/v1/posts", json={"author_id": a, "kind": "poem", "title": "x"})
        assert r.status_code == 422
        assert (await http.post("/v1/posts", json={"author_id": a, "title": ""})).status_code == 422
        assert (
            await http.post("/v1/posts", json={"title": "x"}, headers={"Authorization": ""})
        ).status_code == 401


async def test_only_the_asker_accepts_an_answer_and_only_once(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        asker = await join(members, http)
        first = await join(members, http)
        second = await join(members, http)
        q = (
            await http.post(
                "/v1/posts", json={"author_id": asker, "kind": "question", "title": "?"}
            )
        ).json()
        pid = q["post_id"]
        c1 = (
            await http.post(f"/v1/posts/{pid}/comments", json={"author_id": first, "body": "a"})
        ).json()
        c2 = (
            await http.post(f"/v1/posts/{pid}/comments", json={"author_id": second, "body": "b"})
        ).json()
        own = (
            await http.post(f"/v1/posts/{pid}/comments", json={"author_id": asker, "body": "c"})
        ).json()

        r = await http.post(
            f"/v1/posts/{pid}/accept", json={"comment_id": c1["comment_id"], "by": first}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        r = await http.post(
            f"/v1/posts/{pid}/accept", json={"comment_id": own["comment_id"], "by": asker}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "not_an_answer")
        r = await http.post(f"/v1/posts/{pid}/accept", json={"comment_id": "nope", "by": asker})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_comment")
        r = await http.post(
            f"/v1/posts/{pid}/accept", json={"comment_id": c1["comment_id"], "by": "nobody"}
        )
        assert r.status_code == 422

        ok = await http.post(
            f"/v1/posts/{pid}/accept", json={"comment_id": c1["comment_id"], "by": asker}
        )
        same = await http.post(
            f"/v1/posts/{pid}/accept", json={"comment_id": c1["comment_id"], "by": asker}
        )
        other = await http.post(
            f"/v1/posts/{pid}/accept", json={"comment_id": c2["comment_id"], "by": asker}
        )
        assert (ok.status_code, same.status_code) == (200, 200)
        assert (other.status_code, other.json()["error"]["code"]) == (422, "already_accepted")

        story = (await http.post("/v1/posts", json={"author_id": asker, "title": "story"})).json()
        c3 = (
            await http.post(
                f"/v1/posts/{story['post_id']}/comments", json={"author_id": first, "body": "x"}
            )
        ).json()
        r = await http.post(
            f"/v1/posts/{story['post_id']}/accept",
            json={"comment_id": c3["comment_id"], "by": asker},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "not_a_question")
        # The answer scored once: joined 1 + comment 2 + accepted 10 (+ comment on the story 2).
        assert (await wait_points(http, first, 15))["points_total"] == 15


async def test_a_repeated_post_with_the_same_idempotency_key_is_not_posted_twice(services, nc):
    async with (
        collect(nc, "engagement.post-created.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        a = await join(members, http)
        body = {"author_id": a, "title": "Once"}
        first = await http.post("/v1/posts", json=body, headers={"Idempotency-Key": "k1"})
        again = await http.post("/v1/posts", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        await wait_points(http, a, 6)
        assert len(seen) == 1


async def test_a_member_who_left_cannot_post_and_their_posts_show_a_former_member(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        leaver = await join(members, http, display_name="Leaver")
        other = await join(members, http)
        pid = (await http.post("/v1/posts", json={"author_id": leaver, "title": "Mine"})).json()[
            "post_id"
        ]
        await publish(nc, MemberLeft(member_id=leaver, erase=False, left_at=datetime.now(UTC)))

        async def left() -> bool:
            r = await http.post("/v1/posts", json={"author_id": leaver, "title": "again"})
            return r.status_code == 422 and r.json()["error"]["code"] == "member_left"

        await wait_until(left, message="engagement never learned that the member left")
        post = (await http.get(f"/v1/posts/{pid}")).json()
        assert (post["author_id"], post["author_name"], post["title"]) == (
            leaver,
            "former member",
            "Mine",
        )
        r = await http.post(f"/v1/posts/{pid}/comments", json={"author_id": other, "body": "bye"})
        assert r.status_code == 201


async def _level_is(http, member_id: str, level: str) -> bool:
    return (await engagement_of(http, member_id))["level"] == level


async def test_a_post_whose_answer_was_lost_is_not_made_twice_by_the_retry(services, nc):
    """The post was stored but its answer lost (the connection dropped after the commit): the
    kernel kept nothing as done, so the retry with the same key runs again — and finds the
    post the first attempt made (its id comes from the key), instead of making a second."""
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        author = await join(members, http)
        headers = {"Idempotency-Key": "lost-answer-1"}
        body = {"author_id": author, "title": "Once only"}
        first = await http.post("/v1/posts", json=body, headers=headers)
        assert first.status_code == 201, first.text
        await s["engagement"].runtime.db["idempotency_keys"].delete_many({})  # as after a 5xx
        again = await http.post("/v1/posts", json=body, headers=headers)
        assert again.status_code == 201, again.text
        assert again.json()["post_id"] == first.json()["post_id"]
        assert again.json()["created_at"] == first.json()["created_at"]
        await wait_points(http, author, 1 + 5)
        store = s["engagement"].store
        assert [d["_id"] async for d in store.posts.find({"author_id": {"$eq": author}})] == [
            first.json()["post_id"]
        ]
        assert (await engagement_of(http, author))["points_total"] == 1 + 5

"""Member events in engagement: the projection, joining and referral scores, leaving and erasure."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events import MemberLeft
from tests.helpers import StoppedRelay, wait_until
from tests.integration.test_engagement_support import (
    engagement_of,
    join,
    publish,
    wait_points,
)


async def test_the_projection_keeps_region_roles_and_joining_scores_one(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        mid = await join(members, http, display_name="Olga", region="kazan", roles=["staff"])

        got = await wait_points(http, mid, 1)
        assert (got["points_total"], got["score"], got["level"]) == (1, 1.0, "newcomer")
        assert got["last_active_at"] is None  # joining is not participation
        assert got["joined_at"] is not None
        doc = await s["engagement"].store.member(mid)
        assert (doc["display_name"], doc["region"], doc["roles"], doc["status"]) == (
            "Olga", "kazan", ["staff"], "active",
        )  # fmt: skip


async def test_throwaway_referrals_earn_nothing_until_a_friend_posts_then_fifteen_once(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        r = await members.post(
            "/v1/members",
            json={"display_name": "Referrer", "email": "ref@example.org", "region": "moscow",
                  "consent": {"terms": True}},
        )  # fmt: skip
        referrer, code = r.json()["member_id"], r.json()["referral_code"]
        # Three sign-ups with the code: before, they made the referrer `loyal` (1 + 3 × 15).
        friends = [await join(members, http, referral_code=code) for _ in range(3)]
        stats = (await http.get("/v1/stats")).json()
        assert stats["referral_join_share"] == 0.75  # still word of mouth for the figures
        got = await engagement_of(http, referrer)
        assert (got["points_total"], got["level"]) == (1, "newcomer")

        async def posts(member_id: str, title: str = "Hello") -> None:
            r = await http.post("/v1/posts", json={"author_id": member_id, "title": title})
            assert r.status_code == 201, r.text

        await posts(friends[0])
        got = await wait_points(http, referrer, 1 + 15)
        await wait_points(http, friends[0], 1 + 5)
        # The friend's further activity changes nothing for the referrer: the credit is once.
        await posts(friends[0], "Again")
        await wait_points(http, friends[0], 1 + 5 + 5)
        got = await engagement_of(http, referrer)
        assert (got["points_total"], got["counts"]["referrals"]) == (16, 1)
        assert got["level"] == "participant"
        # A second friend becomes active: the level follows.
        await posts(friends[1])
        got = await wait_points(http, referrer, 1 + 15 + 15)
        assert (got["points_total"], got["counts"]["referrals"]) == (31, 2)
        await wait_until(lambda: _level(http, referrer, "active"), message="level not active")


async def _level(http, member_id: str, level: str) -> bool:
    return (await engagement_of(http, member_id))["level"] == level


async def test_a_member_erased_on_leaving_is_forgotten_and_their_posts_stay_anonymous(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        leaver = await join(members, http, display_name="Leaver")
        staff = await join(members, http, roles=["staff"])
        other = await join(members, http)
        question = (
            await http.post(
                "/v1/posts",
                json={"author_id": leaver, "kind": "question", "title": "My address is ..."},
            )
        ).json()["post_id"]
        answer = (
            await http.post(
                f"/v1/posts/{question}/comments", json={"author_id": other, "body": "Hi"}
            )
        ).json()
        await http.post(
            f"/v1/posts/{question}/comments", json={"author_id": leaver, "body": "Thanks!"}
        )
        entry = (
            await http.post(
                "/v1/hours",
                json={"member_id": leaver, "hours": 2, "activity": "x", "date": "2026-11-01"},
            )
        ).json()
        await http.post(f"/v1/hours/{entry['entry_id']}/approve", json={"by": staff})
        await wait_points(http, leaver, 1 + 3 + 2 + 4)

        js = nc.jetstream()

        async def subjects_naming_the_leaver() -> dict[str, int]:
            info = await js.stream_info("ENGAGEMENT", subjects_filter=f"engagement.*.{leaver}")
            return info.state.subjects or {}

        assert await wait_until(subjects_naming_the_leaver)  # hours-approved, level-changed

        await publish(nc, MemberLeft(member_id=leaver, erase=True, left_at=datetime.now(UTC)))

        async def forgotten() -> bool:
            r = await http.get(f"/v1/members/{leaver}/engagement")
            return r.status_code == 404

        await wait_until(forgotten, message="the erased member is still known")

        async def anonymised() -> dict:
            # The projection says erased first; the stream's messages, then the posts follow.
            post = (await http.get(f"/v1/posts/{question}")).json()
            return post if post["author_id"] is None else {}

        post = await wait_until(anonymised, message="the erased member's post still names her")
        store = s["engagement"].store
        doc = await store.member(leaver)
        assert set(doc) == {"_id", "status", "left_at_ms"} and doc["status"] == "erased"
        assert (post["author_id"], post["author_name"], post["title"], post["body"]) == (
            None, "former member", "", "",
        )  # fmt: skip
        assert post["comments"] == 2  # the community's answers stay
        comments = (await http.get(f"/v1/posts/{question}/comments")).json()["items"]
        assert [(c["author_id"], c["body"]) for c in comments] == [
            (other, "Hi"), (None, ""),
        ]  # fmt: skip
        assert answer["comment_id"] == comments[0]["comment_id"]
        assert (await http.get(f"/v1/members/{leaver}/hours")).status_code == 404
        assert await store.hours.count_documents({"member_id": leaver}) == 0
        # The member's activity record is gone: only an anonymous tombstone keeps the id.
        standing = await store.standing.find_one({"_id": leaver})
        assert set(standing) == {"_id", "erased", "version"}
        board = (await http.get("/v1/leaderboard?period=all")).json()["items"]
        assert leaver not in [row["member_id"] for row in board]
        # Nothing in engagement's own stream names them any more.
        assert await subjects_naming_the_leaver() == {}
        stats = (await http.get("/v1/stats")).json()
        assert stats["members_total"] == 2 and stats["questions_7d"] == 1


async def test_after_erasure_replaying_her_idempotency_keys_shows_nothing_of_her(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        vera = await join(members, http, display_name="Vera Victimova")
        staff = await join(members, http, display_name="Staff", roles=["staff"])
        post = {"author_id": vera, "title": "Vera's flat on Lenina 5", "body": "call me"}
        first = await http.post("/v1/posts", json=post, headers={"Idempotency-Key": "vera-post"})
        assert first.status_code == 201 and "Vera Victimova" in first.text
        pid = first.json()["post_id"]
        comment = {"author_id": vera, "body": "Vera's own words"}
        await http.post(f"/v1/posts/{pid}/comments", json=comment, headers={"Idempotency-Key": "c"})
        hours = {"member_id": vera, "hours": 2, "activity": "Vera's shift", "date": "2026-11-01",
                 "note": "Vera's note"}  # fmt: skip
        entry = (await http.post("/v1/hours", json=hours, headers={"Idempotency-Key": "h"})).json()
        approve = f"/v1/hours/{entry['entry_id']}/approve"
        # Filed under the staff member who decided, though it answers with Vera's entry.
        decided = await http.post(approve, json={"by": staff}, headers={"Idempotency-Key": "d"})
        assert decided.status_code == 200 and "Vera's note" in decided.text
        own = {"author_id": staff, "title": "Staff news"}
        kept = await http.post("/v1/posts", json=own, headers={"Idempotency-Key": "staff-post"})
        await wait_points(http, vera, 1 + 5 + 2 + 4)

        await publish(nc, MemberLeft(member_id=vera, erase=True, left_at=datetime.now(UTC)))

        async def anonymised() -> bool:
            return (await http.get(f"/v1/posts/{pid}")).json()["author_id"] is None

        await wait_until(anonymised, message="the erased member's post was never anonymised")
        replay = await http.post("/v1/posts", json=post, headers={"Idempotency-Key": "vera-post"})
        assert "Idempotent-Replayed" not in replay.headers
        assert (replay.status_code, replay.json()["error"]["code"]) == (422, "member_left")
        again = await http.post(approve, json={"by": staff}, headers={"Idempotency-Key": "d"})
        assert "Idempotent-Replayed" not in again.headers
        for text in ("Victimova", "Lenina", "Vera's"):
            assert text not in replay.text and text not in again.text
        records = await s["engagement"].store.idempotency.find({}).to_list(None)
        assert not [r["_id"] for r in records if "Vera" in str(r)]
        # Another member's requests are still answered from their records.
        same = await http.post("/v1/posts", json=own, headers={"Idempotency-Key": "staff-post"})
        assert same.headers.get("Idempotent-Replayed") == "true" and same.json() == kept.json()


async def test_erasure_drops_her_unpublished_post_events_and_those_set_aside(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        store, relay = s["engagement"].store, s["engagement"].runtime.relay
        vera = await join(members, http, display_name="Vera Victimova")
        stopped = StoppedRelay(relay)  # her post-created stays in the outbox (NATS is slow)
        body = {"author_id": vera, "title": "Lenina 5, flat 12", "tags": ["lenina"]}
        pid = (await http.post("/v1/posts", json=body)).json()["post_id"]
        # And an event of hers the relay once set aside as unpublishable, with its error.
        dead = {"event": {"type": "post-created", "data": body}, "error": "ValueError: Lenina 5"}
        await store.posts.update_one({"_id": pid}, {"$set": {"outbox_dead": {"e1": dead}}})

        await publish(nc, MemberLeft(member_id=vera, erase=True, left_at=datetime.now(UTC)))

        async def anonymised() -> bool:
            return (await http.get(f"/v1/posts/{pid}")).json()["author_id"] is None

        await wait_until(anonymised, message="the erased member's post was never anonymised")
        doc = await store.posts.find_one({"_id": pid})
        assert "Lenina" not in str(doc) and "lenina" not in str(doc)
        assert (doc.get("outbox") or {}) == {} and doc["outbox_pending"] == 0
        stopped.resume()
        await relay.sweep()
        info = await nc.jetstream().stream_info(
            "ENGAGEMENT", subjects_filter=f"engagement.post-created.{pid}"
        )
        assert not info.state.subjects

"""No query the services send reads a whole collection (MongoDB's `notablescan`, as a test), and
no sorted, limited query sorts what it read instead of reading an index in order.

Runs last (tests/conftest.py orders it): by then the recorder of tests/query_plans.py holds every
query shape the integration suite made the services send. It first plays one community through
all the services itself, so that run alone it still covers every endpoint and consumer, then
explains each shape and fails on a scan that is not in the allow-list with its reason.
"""

from __future__ import annotations

from datetime import timedelta

from shared.events import utcnow
from shared.topology import SERVICES
from tests import query_plans
from tests.helpers import wait_until
from tests.integration.conftest import join_body


async def play_a_community(services) -> None:
    """Every endpoint and consumer once: joins by referral, posts and answers, hours, reads,
    a campaign from start to end, notifications, leaving and erasure."""
    async with services(*SERVICES) as s:
        members, engagement = s["members"].http, s["engagement"].http
        campaigns, notifier = s["campaigns"].http, s["notifier"].http
        now = utcnow()
        drive = await campaigns.post(
            "/v1/campaigns",
            json={
                "name": "Bring a friend",
                "kind": "referral-drive",
                "starts_at": (now - timedelta(minutes=1)).isoformat(),
                "ends_at": (now + timedelta(days=7)).isoformat(),
                "audience": {"regions": ["moscow"], "roles": [], "min_level": None},
                "scoring": {"referral-made": 10, "post-created": 2},
                "milestones": [10],
                "winners": 1,
                "announcement": {"ru": "Приведи друга!", "en": "Bring a friend!"},
            },
        )
        assert drive.status_code == 201, drive.text
        cid = drive.json()["campaign_id"]
        assert (await campaigns.post(f"/v1/campaigns/{cid}/start")).status_code == 200

        anna = (await members.post("/v1/members", json=join_body(display_name="Anna"))).json()
        boris = (
            await members.post(
                "/v1/members",
                json=join_body(display_name="Boris", referral_code=anna["referral_code"]),
                headers={"Idempotency-Key": "join-boris"},
            )
        ).json()
        clara = (
            await members.post(
                "/v1/members", json=join_body(display_name="Clara", roles=["coordinator"])
            )
        ).json()
        a, b, c = anna["member_id"], boris["member_id"], clara["member_id"]

        async def known(member_id: str) -> bool:
            got = await engagement.get(f"/v1/members/{member_id}/engagement")
            return got.status_code == 200

        for member_id in (a, b, c):
            await wait_until(lambda m=member_id: known(m), timeout=20)
        await members.patch(f"/v1/members/{b}", json={"region": "moscow", "interests": ["trees"]})
        question = await engagement.post(
            "/v1/posts", json={"author_id": a, "kind": "question", "title": "Where?", "body": "?"}
        )
        assert question.status_code == 201, question.text
        pid = question.json()["post_id"]
        comment = await engagement.post(
            f"/v1/posts/{pid}/comments", json={"author_id": b, "body": "Here"}
        )
        assert comment.status_code == 201, comment.text
        await engagement.post(
            f"/v1/posts/{pid}/reactions", json={"member_id": b, "reaction": "like"}
        )
        accepted = await engagement.post(
            f"/v1/posts/{pid}/accept", json={"comment_id": comment.json()["comment_id"], "by": a}
        )
        assert accepted.status_code == 200, accepted.text
        hours = await engagement.post(
            "/v1/hours",
            json={
                "member_id": b,
                "hours": 3,
                "activity": "cleanup",
                "date": now.date().isoformat(),
            },
        )
        assert hours.status_code == 201, hours.text
        decided = await engagement.post(
            f"/v1/hours/{hours.json()['entry_id']}/approve", json={"by": c}
        )
        assert decided.status_code == 200, decided.text

        async def scored() -> bool:
            board = (await campaigns.get(f"/v1/campaigns/{cid}/leaderboard")).json()["items"]
            return any(row["member_id"] == a for row in board)

        await wait_until(scored, timeout=20)
        reads = [
            (members, "/v1/members?limit=2"),
            (members, "/v1/members?region=moscow&role=volunteer&interest=ecology"),
            (members, f"/v1/members/{a}/referrals"),
            (engagement, f"/v1/posts/{pid}"),
            (engagement, f"/v1/posts/{pid}/comments?limit=1"),
            (engagement, f"/v1/members/{b}/hours?limit=1"),
            (engagement, "/v1/stats"),
            (engagement, "/v1/leaderboard?period=7d"),
            (engagement, "/v1/leaderboard?period=30d&region=moscow"),
            (engagement, "/v1/leaderboard?period=all"),
            (engagement, "/v1/segments/new-promising"),
            (engagement, "/v1/segments/loyal"),
            (engagement, "/v1/segments/drifting"),
            (campaigns, "/v1/campaigns?limit=1"),
            (campaigns, "/v1/campaigns?status=active"),
            (campaigns, f"/v1/campaigns/{cid}/report"),
            (notifier, f"/v1/members/{a}/inbox?limit=1"),
            (notifier, f"/v1/members/{a}/preferences"),
            (notifier, f"/v1/notifications?member_id={a}"),
            (notifier, "/v1/notifications?status=delivered&limit=1"),
        ]
        for http, path in reads:
            first = await http.get(path)
            assert first.status_code == 200, (path, first.text)
            cursor = first.json().get("next_cursor")
            if cursor:
                separator = "&" if "?" in path else "?"
                following = await http.get(f"{path}{separator}cursor={cursor}")
                assert following.status_code == 200, (path, following.text)
        await notifier.put(f"/v1/members/{a}/preferences", json={"channels": {"email": False}})

        async def inbox_has_welcome() -> bool:
            inbox = (await notifier.get(f"/v1/members/{a}/inbox")).json()["items"]
            return any(item["template"] == "welcome" for item in inbox)

        await wait_until(inbox_has_welcome, timeout=20)
        await play_activities(s["activities"], a, b, c)
        assert (await campaigns.post(f"/v1/campaigns/{cid}/end")).status_code == 200
        assert (await members.delete(f"/v1/members/{c}")).status_code == 204
        assert (await members.delete(f"/v1/members/{b}?erase=true")).status_code == 204

        async def erased() -> bool:
            got = await engagement.get(f"/v1/members/{b}/engagement")
            return got.status_code == 404

        await wait_until(erased, timeout=20)
        for job in (
            s["engagement"].jobs.scan_drifting,
            s["engagement"].jobs.scan_unanswered,
            s["engagement"].jobs.refresh_gauges,
        ):
            await job(utcnow())
        await s["campaigns"].jobs.tick()
        await s["activities"].jobs.repair(utcnow() + timedelta(minutes=5))
        await s["activities"].jobs.refresh_gauges(utcnow())


async def play_activities(running, a: str, b: str, c: str) -> None:
    """Every activities endpoint, job and erasure path once (members a, b, c are known)."""
    http, jobs = running.http, running.jobs
    state = running.app.state.context
    for member_id in (a, b, c):

        async def known(m: str = member_id) -> bool:
            return (await http.get(f"/v1/members/{m}/activities")).status_code == 200

        await wait_until(known, timeout=20)
    starts = utcnow() + timedelta(hours=1)

    def shift(at, capacity: int = 1) -> dict:
        end = at + timedelta(hours=2)
        return {"role": "planter", "starts_at": at.isoformat(), "ends_at": end.isoformat(),
                "capacity": capacity}  # fmt: skip

    body = {"title": "Planting", "region": "moscow", "organiser_id": c, "status": "draft",
            "shifts": [shift(starts), shift(starts + timedelta(hours=3))]}  # fmt: skip
    made = await http.post("/v1/activities", json=body)
    assert made.status_code == 201, made.text
    activity = made.json()
    aid, s1 = activity["activity_id"], activity["shifts"][0]["shift_id"]
    patched = await http.patch(
        f"/v1/activities/{aid}",
        json={
            "status": "published",
            "location": "gate",
            "shifts": [{"shift_id": s1, "capacity": 2}],
        },
    )
    assert patched.status_code == 200, patched.text
    signups = [
        (await http.post(f"/v1/activities/{aid}/shifts/{s1}/signups", json={"member_id": m})).json()
        for m in (a, b, c)
    ]
    assert signups[2]["status"] == "waitlisted", signups
    assert (await http.post(f"/v1/signups/{signups[0]['signup_id']}/confirm")).status_code == 200
    assert (await http.delete(f"/v1/signups/{signups[1]['signup_id']}")).status_code == 200
    cut = await http.patch(
        f"/v1/activities/{aid}", json={"shifts": [{"shift_id": s1, "capacity": 1}]}
    )
    assert cut.status_code == 409, cut.text
    link = await http.post(f"/v1/activities/{aid}/checkin-link")
    assert link.status_code == 201
    assert await state.links.resolve(link.json()["url"].rsplit("/", 1)[1], utcnow())
    checkin_page = link.json()["url"].split("/checkin/", 1)[1]
    for query in ("", f"?shift={s1}&after=0000000000000:su"):
        shown = await http.get(f"/checkin/{checkin_page}{query}")
        assert shown.status_code == 200, shown.text
    assert (await http.delete(f"/v1/activities/{aid}/checkin-link")).status_code == 204
    running.clock.at(starts + timedelta(minutes=10))
    code = activity["shifts"][0]["checkin_code"]
    assert (await http.post("/v1/checkin", json={"code": code, "member_id": a})).status_code == 200
    assert (
        await http.post("/v1/checkin", json={"code": "ZZZZZ9", "member_id": a})
    ).status_code in (409, 422)
    for member_id, action in ((a, "check-out"), (b, "check-in"), (c, "no-show")):
        mark = {"member_id": member_id, "shift_id": s1, "action": action}
        r = await http.post(f"/v1/activities/{aid}/attendance", json=mark)
        assert r.status_code == 200, (action, r.text)
    running.clock.reset()
    reads = [
        f"/v1/activities/{aid}",
        f"/v1/activities/{aid}/report",
        "/v1/activities/stats",
        "/v1/activities?limit=1",
        "/v1/activities?region=moscow&status=published",
        "/v1/activities?status=published",
        f"/v1/activities?region=moscow&from={utcnow().isoformat()[:19]}&to=2099-01-01T00:00:00",
        f"/v1/activities/{aid}/shifts/{s1}/signups?limit=1",
        f"/v1/members/{a}/activities?limit=1",
        f"/v1/signups/{signups[2]['signup_id']}",
    ]
    for path in reads:
        first = await http.get(path)
        assert first.status_code == 200, (path, first.text)
        cursor = first.json().get("next_cursor")
        if cursor:
            separator = "&" if "?" in path else "?"
            assert (await http.get(f"{path}{separator}cursor={cursor}")).status_code == 200
    await jobs.close_shifts(starts + timedelta(hours=10))
    await jobs.repair(utcnow() + timedelta(minutes=5))
    await jobs.refresh_gauges(utcnow())
    other = {**body, "status": "published", "shifts": [shift(starts + timedelta(days=1))]}
    second = (await http.post("/v1/activities", json=other)).json()
    await http.post(
        f"/v1/activities/{second['activity_id']}/shifts/{second['shifts'][0]['shift_id']}/signups",
        json={"member_id": b},
    )
    assert (
        await http.post(f"/v1/activities/{aid}/cancel", json={"reason": "rain"})
    ).status_code == 200
    assert (
        await http.post(f"/v1/activities/{second['activity_id']}/cancel", json={"reason": "rain"})
    ).status_code == 200


async def test_no_query_the_services_send_reads_a_whole_collection(services, mongo_url):
    await play_a_community(services)
    assert query_plans.RECORDER.services_seen() == set(SERVICES), (
        "the recorder saw no queries: is tests/query_plans.install() still called?"
    )
    problems = await query_plans.scanning_shapes(mongo_url)
    assert not problems, (
        f"{len(problems)} query shape(s) read a whole collection (fix the query or its index; "
        "only a job that must read everything goes in query_plans.ALLOWED_SCANS):\n"
        + "\n".join(problems)
    )


async def test_no_top_n_query_sorts_what_it_reads_instead_of_reading_an_index_in_order(
    services, mongo_url
):
    if not query_plans.RECORDER.shapes:
        await play_a_community(services)
    _, sorts = await query_plans.plan_problems(mongo_url)
    assert not sorts, (
        f"{len(sorts)} sorted, limited query shape(s) read and sort every matching document "
        "(give the sort one stored key and an index of the equality fields then that key; only "
        "a collection that stays small goes in query_plans.ALLOWED_SORTS):\n" + "\n".join(sorts)
    )


async def test_no_write_filter_uses_an_operator_the_embedded_server_gets_wrong(services):
    if not query_plans.RECORDER.shapes:
        await play_a_community(services)
    problems = query_plans.unsafe_writes()
    assert not problems, (
        f"{len(problems)} write filter shape(s) use $or/$ne or an unverified operator "
        "(docs/patterns.md, write-filter traps):\n" + "\n".join(problems)
    )

"""Erasure reaches other members' messages: a text that named the erased member (a comment, an
accepted answer, a referral, an unanswered question, a digest item) names her no more, and
nothing in the notifier's database holds her name or address."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import (
    ActivityChanged,
    AnswerAccepted,
    CommentAdded,
    MemberLeft,
    QuestionUnanswered,
    ReferralMade,
)
from tests.helpers import wait_until
from tests.integration.activity_events import (
    activities_idle,
    activity,
    at_clock,
    items,
    run_reminders,
    signed_up,
    wait_item,
)
from tests.integration.notifier_peers import MailRecorder, publish
from tests.integration.test_notifier_flows import (
    channels,
    inbox,
    joined,
    smtp,
    streams,
    telegram,
    wait_delivery,
    wait_for_member,
    webhook,
)

#: The flows' peers and settings, as fixtures (pytest finds them here by name).
FIXTURES = (channels, smtp, streams, telegram, webhook)


async def everything_in(db: Any) -> str:
    """Every document of every collection of the database, as one lower-case text."""
    parts = []
    for name in await db.list_collection_names():
        async for doc in db[name].find({}):
            parts.append(f"{name}: {json.dumps(doc, default=str, ensure_ascii=False)}")
    return "\n".join(parts).lower()


async def test_an_erased_member_is_named_in_no_other_members_message_nor_anywhere_in_the_db(
    services: Any, nc: Any, streams: None, channels: dict[str, Any], smtp: MailRecorder
) -> None:
    tag = uuid.uuid4().hex[:6]
    name, address = f"Vera Victimova{tag}", f"vera.{tag}@example.org"
    async with services("notifier", SARAFAN_NOTIFIER_DAILY_BUDGET=50, **channels) as s:
        notifier, store = s["notifier"].http, s["notifier"].store
        vera = joined(display_name=name, contacts={"email": address}, region="tver")
        boris = joined(display_name="Boris", contacts={"email": f"boris.{tag}@example.org"})
        olga = joined(
            display_name="Olga",
            region="tver",
            roles=["coordinator"],
            contacts={"email": f"olga.{tag}@example.org"},
        )
        dina = joined(display_name="Dina", timezone="UTC", contacts={"email": f"d.{tag}@x.org"})
        for m in (vera, boris, olga, dina):
            await publish(nc, m)
        for m in (vera, boris, olga, dina):
            await wait_for_member(notifier, m.member_id)
        r = await notifier.put(
            f"/v1/members/{dina.member_id}/preferences",
            json={"community": "digest", "digest_hour": 18},
        )
        assert r.status_code == 200, r.text
        now = datetime.now(UTC)
        v, b = vera.member_id, boris.member_id
        dp = dina.member_id
        for event in (
            ReferralMade(referral_id="r1", referrer_id=b, referred_id=v, code="K7QX9M", at=now),
            # Vera comments on Boris's question, and on Dina's (which goes to Dina's digest).
            CommentAdded(
                comment_id="c1", post_id="p1", author_id=v, post_author_id=b, created_at=now
            ),
            CommentAdded(
                comment_id="c2", post_id="p2", author_id=v, post_author_id=dp, created_at=now
            ),
            AnswerAccepted(
                post_id="p3", comment_id="c3", asker_id=v, answerer_id=b, seconds_to_answer=9
            ),
            QuestionUnanswered(post_id="p4", asker_id=v, region="tver", hours_open=30),
        ):
            await publish(nc, event)

        async def boris_told() -> list[dict[str, Any]]:
            items = await inbox(notifier, b)
            return items if len(items) == 4 else []  # the welcome and three naming Vera

        told = await wait_until(boris_told, message="Boris's inbox")
        assert sum(name in i["body"] for i in told) == 3
        for template in ("referral_thanks", "comment_added", "answer_thanks"):
            await wait_delivery(notifier, b, "email", template=template)
        coordinator = await wait_until(
            lambda: _item(notifier, olga.member_id, "question_unanswered"), message="Olga"
        )
        assert name in coordinator["body"]
        digest = await wait_delivery(
            notifier, dina.member_id, "email", status="deferred", template="digest"
        )
        assert name in (await _item(notifier, dina.member_id, "comment_added"))["body"]
        assert name.lower() in await everything_in(store.deliveries.database)
        # An Idempotency-Key record about her (as the kernel keeps them for POSTs).
        await store.idempotency.insert_one(
            {"_id": f"k-{tag}", "member_id": v, "response": {"display_name": name}}
        )

        await publish(nc, MemberLeft(member_id=v, erase=True, left_at=datetime.now(UTC)))

        async def forgotten() -> bool:
            # The tombstone is written first (a fan-out after it names her nowhere), then what
            # she held goes: the erasure is done once the member-left is acknowledged.
            r = await notifier.get(f"/v1/members/{v}/preferences")
            info = await nc.jetstream().consumer_info("MEMBERS", "notifier-members")
            settled = info.num_pending == 0 and info.num_ack_pending == 0
            return r.status_code == 404 and settled

        await wait_until(forgotten, message="erasure")
        text = await everything_in(store.deliveries.database)
        assert name.lower() not in text and address not in text
        assert "victimova" not in text
        # The texts that named her still read, without her name.
        after = {i["template"]: i["body"] for i in await inbox(notifier, b)}
        assert after["comment_added"].startswith("Boris, — ответил(а)")
        assert after["answer_thanks"].startswith("Boris, — отметил(а)")
        assert after["referral_thanks"].startswith("Boris, ваш друг присоединяется")
        unanswered = await _item(notifier, olga.member_id, "question_unanswered")
        assert unanswered is not None and "участника —" in unanswered["body"]

        # Dina's digest, sent after the erasure, is written without her name.
        due = datetime.fromisoformat(digest["due_at"])
        s["notifier"].clock.offset = due - datetime.now(UTC) + timedelta(seconds=1)
        s["notifier"].jobs.dispatcher.wake()
        await wait_delivery(notifier, dina.member_id, "email", template="digest")
        body = smtp.to(dina.contacts.email)[-1].get_body(("plain",)).get_content()
        assert name not in body and "—" in body
        assert name.lower() not in await everything_in(store.deliveries.database)


async def _item(notifier: Any, member_id: str, template: str) -> dict[str, Any] | None:
    for item in await inbox(notifier, member_id):
        if item["template"] == template:
            return item
    return None


async def test_an_erased_member_keeps_no_sign_up_reminder_or_interest_and_is_told_nothing(
    services: Any, nc: Any, streams: None, channels: dict[str, Any]
) -> None:
    tag = uuid.uuid4().hex[:6]
    name, address = f"Vera Victimova{tag}", f"vera.{tag}@example.org"
    manual = {"SARAFAN_NOTIFIER_REMINDER_SECONDS": 3600}
    async with services("notifier", **manual, **channels) as s:
        notifier, store = s["notifier"].http, s["notifier"].store
        t0 = (datetime.now(UTC) + timedelta(days=2)).replace(hour=12, minute=0, second=0)
        at_clock(s, t0)
        vera = joined(
            display_name=name, contacts={"email": address}, interests=["ecology"], timezone="UTC"
        )
        boris = joined(display_name="Boris", interests=["ecology"], timezone="UTC")
        for m in (vera, boris):
            await publish(nc, m)
        for m in (vera, boris):
            await wait_for_member(notifier, m.member_id)
        start = t0 + timedelta(days=2)
        act = activity(start)
        hers, his = signed_up(act, vera.member_id), signed_up(act, boris.member_id)
        for event in (act, hers, his):
            await publish(nc, event)
        await wait_item(notifier, vera.member_id, "signup_confirmed")
        await wait_item(notifier, boris.member_id, "signup_confirmed")
        v = vera.member_id

        async def held(collection: str) -> list[dict[str, Any]]:
            return (
                await store.deliveries.database[collection]
                .find({"member_id": {"$eq": v}})
                .to_list(None)
            )

        for collection in ("signups", "reminders", "member_interests"):
            assert await held(collection), collection

        await publish(nc, MemberLeft(member_id=v, erase=True, left_at=datetime.now(UTC)))

        async def forgotten() -> bool:
            r = await notifier.get(f"/v1/members/{v}/preferences")
            return r.status_code == 404

        await wait_until(forgotten, message="erasure")

        async def gone() -> bool:  # the tombstone comes first, then what she held goes
            held_now = [await held(c) for c in ("signups", "reminders", "member_interests")]
            return not any(held_now) and await held("deliveries") == []

        await wait_until(gone, message="her sign-ups, reminders and interests")
        text = await everything_in(store.deliveries.database)
        assert name.lower() not in text and address not in text and "victimova" not in text

        # A late copy of her sign-up, a change and the reminders afterwards reach Boris only.
        await publish(nc, hers, msg_id=f"late-{uuid.uuid4()}")
        await publish(nc, ActivityChanged(activity_id=act.activity_id, changes={"location": "Юг"}))
        await wait_item(notifier, boris.member_id, "activity_changed")
        await activities_idle(nc)
        at_clock(s, start - timedelta(hours=24) + timedelta(minutes=1))
        assert await run_reminders(s) == 1
        await wait_item(notifier, boris.member_id, "activity_reminder")
        for collection in ("signups", "reminders", "deliveries"):
            assert await held(collection) == [], collection
        assert await items(notifier, v, "activity_reminder") == []

"""Activities events as the activities service publishes them, for the notifier's tests, and the
waits those tests share (the notifier's consumer of ACTIVITIES idle, an inbox item arrived)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from shared.events import ActivityPublished, SignedUp, SignUpChanged
from tests.helpers import wait_until
from tests.integration.test_notifier_flows import inbox


def activity(
    *starts: datetime,
    hours: int = 4,
    title: str = "Посадка деревьев",
    location: str | None = "Битцевский парк",
    audience: dict[str, Any] | None = None,
    announce: bool = False,
    reminders: list[int] | None = None,
    timezone: str = "Europe/Moscow",
) -> ActivityPublished:
    """A published activity with one shift per start (`s_0`, `s_1`, ... of this activity)."""
    aid = f"a_{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "activity_id": aid,
        "title": title,
        "region": "moscow",
        "location": location,
        "timezone": timezone,
        "organiser_id": "m_organiser",
        "audience": audience or {},
        "shifts": [
            {
                "shift_id": f"{aid}_s{n}",
                "role": "planter",
                "starts_at": start,
                "ends_at": start + timedelta(hours=hours),
                "capacity": 10,
            }
            for n, start in enumerate(starts)
        ],
        "announce": announce,
    }
    if reminders is not None:
        fields["reminders_minutes"] = reminders
    return ActivityPublished.model_validate(fields)


def signed_up(
    act: ActivityPublished,
    member_id: str,
    status: str = "confirmed",
    *,
    shift: int = 0,
    position: int | None = None,
) -> SignedUp:
    return SignedUp(
        signup_id=f"su_{uuid.uuid4().hex[:10]}",
        activity_id=act.activity_id,
        shift_id=act.shifts[shift].shift_id,
        member_id=member_id,
        status=status,  # type: ignore[arg-type]
        position=position,
    )


def changed(signup: SignedUp, status: str, reason: str) -> SignUpChanged:
    return SignUpChanged(
        signup_id=signup.signup_id,
        activity_id=signup.activity_id,
        shift_id=signup.shift_id,
        member_id=signup.member_id,
        status=status,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
    )


async def activities_idle(nc: Any, timeout: float = 20) -> None:
    """Every activities event published so far is handled by the notifier."""

    async def idle() -> bool:
        info = await nc.jetstream().consumer_info("ACTIVITIES", "notifier-activities")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await wait_until(idle, timeout=timeout, message="the notifier's activities consumer is behind")


async def items(notifier: Any, member_id: str, template: str) -> list[dict[str, Any]]:
    return [i for i in await inbox(notifier, member_id) if i["template"] == template]


async def wait_item(notifier: Any, member_id: str, template: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        got = await items(notifier, member_id, template)
        return got[0] if got else None

    return await wait_until(found, message=f"no {template} in the inbox of {member_id}")


def at_clock(running: dict[str, Any], moment: datetime) -> None:
    """Set the notifier's clock (planning, the reminder job, the dispatcher) to `moment`."""
    running["notifier"].clock.offset = moment - datetime.now(moment.tzinfo)
    running["notifier"].jobs.dispatcher.wake()


async def run_reminders(running: dict[str, Any]) -> int:
    """One run of the reminder job at the notifier's clock (as its periodic loop would)."""
    jobs = running["notifier"].jobs
    handled = await jobs.reminders.run_due()
    jobs.dispatcher.wake()
    return handled

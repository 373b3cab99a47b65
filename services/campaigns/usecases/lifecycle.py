"""A campaign's life as use cases: create, start, end (with winners), cancel, the scheduler's tick.

Each transition is one conditional update of the campaign document (`status` must still be
what we read) carrying its event in the same write, so it happens exactly once however many
replicas, schedulers and clients race for it (docs/patterns.md: outbox, work that runs once).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from services.campaigns import draw
from services.campaigns.domain import Rules, Standing, validate_definition
from services.campaigns.repositories import CampaignsUnitOfWork
from services.campaigns.schemas import CampaignIn
from services.campaigns.store import OPEN, CampaignsStore
from services.campaigns.usecases.outcome import (
    PLACEHOLDER_COMMITMENT,
    ended_event,
    ending,
    final_result,
    started_event,
)
from shared.clock import Clock, epoch_ms, from_ms
from shared.documents import Doc
from shared.events import CloudEvent
from shared.skipped import SkippedDocuments
from shared.store import TRANSIENT_DB_ERRORS, is_duplicate_key

log = logging.getLogger("sarafan.campaigns")


class InvalidCampaign(Exception):
    """A definition whose fields do not make a campaign that can run (every problem named)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Conflict(Exception):
    """The campaign is not in a status that allows the transition."""

    def __init__(self, campaign_id: str, status: str, wanted: str) -> None:
        super().__init__(f"campaign {campaign_id} is {status}; cannot {wanted} it")
        self.status = status


class Missing(Exception):
    """No campaign with that id."""


def standings_from_docs(docs: list[Doc], skipped: SkippedDocuments | None = None) -> list[Standing]:
    """The standings of the documents; one that cannot be read is left out (and counted)
    rather than keeping the campaign from ever ending."""
    standings = []
    for doc in docs:
        try:
            standings.append(Standing.from_doc(doc))
        except (KeyError, TypeError, ValueError) as exc:
            if skipped is None:
                raise
            skipped.skip("standings", doc.get("_id"), exc, "ending a campaign")
    return standings


def new_campaign(definition: dict[str, Any], created: datetime, campaign_id: str) -> Doc:
    """The document of a campaign just created: `scheduled`, its window its own times."""
    starts_ms, ends_ms = epoch_ms(definition.pop("starts_at")), epoch_ms(definition.pop("ends_at"))
    return {
        "_id": campaign_id,
        **definition,
        "status": "scheduled",
        "starts_ms": starts_ms,
        "ends_ms": ends_ms,
        # The window scoring uses; a start or end by hand moves it.
        "window_start_ms": starts_ms,
        "window_end_ms": ends_ms,
        "created_ms": epoch_ms(created),
        "version": 1,
    }


def _secret(doc: Doc) -> bytes | None:
    """The secret a draw committed to at its start; None for a campaign that started without
    one (before `sarafan-draw-v2`): its draw is `sarafan-draw-v1`. A stored secret that is
    not one raises: falling back to v1 would let a changed document pick the procedure."""
    stored = doc.get("draw_secret")
    return None if stored is None else draw.secret_from_hex(stored)


def _log_end(campaign_id: str, end: Doc, result: dict[str, Any], early_ms: int) -> None:
    # Who ended it and when its standings froze; never the secret (campaign-ended has it).
    winners = [w["member_id"] for w in result["winners"]]
    if end["early"]:
        log.warning(
            "campaign %s ended early by hand by key %s, %d s before its end; standings "
            "frozen at %s: %d participants, winners %s",
            campaign_id,
            end["key_id"],
            early_ms // 1000,
            from_ms(end["frozen_ms"]).isoformat(),
            result["participants"],
            winners,
        )
        return
    log.info(
        "campaign %s ended %s: %d participants, winners %s",
        campaign_id,
        f"by hand by key {end['key_id']}" if end["by_hand"] else "by the scheduler",
        result["participants"],
        winners,
    )


class Lifecycle:
    """The lifecycle use cases, with what they need: the store, a unit of work for the
    transitions (each carries its event), the grace after a campaign's end, the count of
    stored documents they had to leave out, and the service's clock (the runtime's): each use
    case reads the time from it, unless a caller names the moment (`now`: the scheduler's
    tick, a test)."""

    def __init__(
        self,
        store: CampaignsStore,
        unit_of_work: Callable[[], CampaignsUnitOfWork],
        end_grace: timedelta,
        skipped: SkippedDocuments,
        clock: Clock,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.end_grace = end_grace
        self.skipped = skipped
        self.clock = clock

    async def create(
        self, cmd: CampaignIn, now: datetime | None = None, campaign_id: str | None = None
    ) -> Doc:
        """Store a new campaign, `scheduled`; raises InvalidCampaign listing every problem
        (nothing stored then). `campaign_id` (derived from the request's Idempotency-Key)
        makes a retried create find the campaign its first attempt stored."""
        now = now or self.clock()
        problems = validate_definition(
            cmd.starts_at,
            cmd.ends_at,
            cmd.scoring,
            cmd.milestones,
            cmd.winners,
            now,
            count_referrals=cmd.count_referrals,
        )
        if problems:
            raise InvalidCampaign(problems)
        doc = new_campaign(
            cmd.model_dump(mode="python"), now, campaign_id or f"c_{uuid.uuid4().hex}"
        )
        # The event its start will publish, built now: one NATS would refuse (too big), or
        # one that cannot be built, is a 422 before anything is stored, never a campaign
        # that can not start (EventTooLarge is answered by the HTTP kernel).
        commitment = PLACEHOLDER_COMMITMENT if doc.get("winner_rule") == "draw" else None
        started_event(doc, doc["window_start_ms"], commitment)
        async with self.unit_of_work() as uow:
            try:
                await uow.commit(uow.campaigns.insert(doc))
            except Exception as exc:
                if not is_duplicate_key(exc):
                    raise
                existing = await self.store.campaign(doc["_id"])
                if existing is None:
                    raise
                return existing
        return doc

    async def _get(self, campaign_id: str, *, secret: bool = False) -> Doc:
        doc = await self.store.campaign(campaign_id, secret=secret)
        if doc is None:
            raise Missing(campaign_id)
        return doc

    async def _transition(
        self,
        campaign_id: str,
        statuses: Sequence[str],
        changes: Doc,
        events: list[CloudEvent],
        *,
        window_started_by_ms: int | None = None,
    ) -> Doc | None:
        # The next move depends on who won: committed here, its outcome read.
        async with self.unit_of_work() as uow:
            step = uow.campaigns.transition(
                campaign_id, statuses, changes, events, window_started_by_ms=window_started_by_ms
            )
            return await uow.commit(step)

    async def start(
        self, campaign_id: str, now: datetime | None = None, *, by_hand: bool
    ) -> Doc | None:
        """scheduled → active with campaign-started; None when another caller got there first."""
        now = now or self.clock()
        doc = await self._get(campaign_id)
        if doc["status"] != "scheduled":
            raise Conflict(campaign_id, doc["status"], "start")
        now_ms = epoch_ms(now)
        if by_hand:
            window_start = min(int(doc["window_start_ms"]), now_ms)
        else:
            window_start = int(doc["window_start_ms"])
        changes: Doc = {"status": "active", "started_ms": now_ms, "window_start_ms": window_start}
        commitment = None
        if doc.get("winner_rule") == "draw":
            # Drawn by every replica that tries; the one whose update wins stores its secret
            # with the commitment its event publishes (the same write), the others' are lost.
            secret = secrets.token_bytes(draw.SECRET_BYTES)
            commitment = draw.commitment_of(secret)
            changes |= {"draw_secret": secret.hex(), "draw_commitment": commitment}
        started = started_event(doc, window_start, commitment)
        after = await self._transition(
            campaign_id,
            ["scheduled"],
            changes,
            [started],
            window_started_by_ms=None if by_hand else now_ms,
        )
        if after is not None:
            log.info("campaign %s started (%s)", campaign_id, "by hand" if by_hand else "on time")
        return after

    async def end(
        self,
        campaign_id: str,
        now: datetime | None = None,
        *,
        by_hand: bool,
        key_id: str | None = None,
    ) -> Doc | None:
        """active → ended with winners and campaign-ended; None when another caller ended it.

        The standings are frozen at the window's end: `ends_at` for the scheduler (which
        ends a campaign once the grace for late events is over), now for an end by hand
        before it. Scoring counts only activities timed inside the window and stops at this
        transition, so nothing timed after the freeze is in the standings the draw uses (but
        for an early end, an activity credited before it whose producer's clock ran ahead).
        `key_id` (the API key of an end by hand) is recorded with the end.
        """
        now = now or self.clock()
        doc = await self._get(campaign_id, secret=True)
        if doc["status"] != "active":
            raise Conflict(campaign_id, doc["status"], "end")
        now_ms = epoch_ms(now)
        end = ending(doc, now_ms, by_hand=by_hand, key_id=key_id)
        rules = Rules.from_doc(doc)
        # Every standing of the campaign, once, when it ends: the winners (top) and the
        # draw's seed and entrants need them all, so this read grows with the participants.
        standings = standings_from_docs(await self.store.standings_of(campaign_id), self.skipped)
        result = final_result(rules, standings, _secret(doc))
        changes = {
            "status": "ended",
            "ended_ms": now_ms,
            "window_end_ms": end["frozen_ms"],
            "result": result,
            "ending": end,
        }
        ended = ended_event(rules, result, end, now_ms)
        after = await self._transition(campaign_id, ["active"], changes, [ended])
        if after is not None:
            _log_end(campaign_id, end, result, int(doc["window_end_ms"]) - now_ms)
        return after

    async def cancel(self, campaign_id: str, now: datetime | None = None) -> Doc | None:
        """scheduled or active → cancelled: no winners, and no event (the contract has none)."""
        now = now or self.clock()
        doc = await self._get(campaign_id)
        if doc["status"] not in OPEN:
            raise Conflict(campaign_id, doc["status"], "cancel")
        changes = {"status": "cancelled", "cancelled_ms": epoch_ms(now)}
        return await self._transition(campaign_id, OPEN, changes, [])

    async def tick(self, now: datetime | None = None) -> None:
        """Start what is due, end what is over (after the grace for events still in flight).

        Each campaign in its own try: one that cannot be started or ended (a document broken
        by hand or by an old version) is logged, counted and left, and the others still start
        and end on time.
        """
        now = now or self.clock()
        now_ms = epoch_ms(now)
        for campaign_id in await self.store.due_to_start(now_ms):
            await self._quietly(campaign_id, "start", self.start(campaign_id, now, by_hand=False))
        cutoff = now_ms - int(self.end_grace.total_seconds() * 1000)
        for campaign_id in await self.store.due_to_end(cutoff):
            await self._quietly(campaign_id, "end", self.end(campaign_id, now, by_hand=False))

    async def _quietly(self, campaign_id: str, action: str, transition: Awaitable[Any]) -> None:
        try:
            await transition
        except (Conflict, Missing):
            # Another replica or a client moved the campaign meanwhile: nothing to do.
            pass
        except TRANSIENT_DB_ERRORS:
            # The database is away: the whole tick fails and runs again at the next one.
            raise
        except Exception as exc:
            self.skipped.skip("campaigns", campaign_id, exc, f"scheduler could not {action}")

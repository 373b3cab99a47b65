"""The campaigns service's unit of work and the repositories it owns.

A use case opens a `CampaignsUnitOfWork` (the composition root makes the factory) and stages
its writes through the repositories the unit of work made for it: `uow.campaigns` (a new
campaign, a transition) and `uow.standings` (the credits' writes). A repository only stages
(`shared.uow.Repository`): each method returns the staged step, made by the owner's commit,
which also publishes the events the write carries; the use case commits where its next move
depends on a write's outcome. The repositories keep the store for its collections; plain
reads, and the writes that carry no event (the members projection, activity facts, levels),
stay on `CampaignsStore`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.results import BulkWriteResult

from services.campaigns.store import HIDDEN, CampaignsStore
from shared.documents import Doc
from shared.events import CloudEvent
from shared.outbox_port import Publisher
from shared.query import order_key, where
from shared.uow import Repository, Step, UnitOfWork, Write


class CampaignsRepository(Repository):
    """The writes of campaign documents: a new campaign and its transitions."""

    __slots__ = ("store",)

    def __init__(self, uow: UnitOfWork, store: CampaignsStore) -> None:
        super().__init__(uow)
        self.store = store

    def insert(self, doc: Doc) -> Step[None]:
        """Stage the insert of a new campaign (a duplicate key at commit: stored before)."""
        return self.uow.insert(
            self.store.campaigns,
            {**doc, "order_key": order_key(int(doc["created_ms"]), doc["_id"])},
        )

    def transition(
        self,
        campaign_id: str,
        statuses: Sequence[str],
        changes: Doc,
        events: list[CloudEvent],
        *,
        window_started_by_ms: int | None = None,
    ) -> Step[Doc | None]:
        """Stage `changes`, applied only if the campaign is still in one of `statuses` (and,
        with `window_started_by_ms`, its window started by then); exactly one caller wins, and
        its events ride in the same single-document update (the outbox). The step's outcome:
        the campaign after the change, or None for a caller that lost."""
        condition: Doc = {"status": statuses[0] if len(statuses) == 1 else {"$in": list(statuses)}}
        if window_started_by_ms is not None:
            condition["window_start_ms"] = {"$lte": window_started_by_ms}
        return self.uow.find_one_and_update(
            self.store.campaigns,
            where({"_id": campaign_id, **condition}),
            {"$set": changes, "$inc": {"version": 1}},
            events,
            projection=HIDDEN,
        )


class StandingsRepository(Repository):
    """The writes of standings: one document per (campaign, member), with its milestones."""

    __slots__ = ("store",)

    def __init__(self, uow: UnitOfWork, store: CampaignsStore) -> None:
        super().__init__(uow)
        self.store = store

    def write(self, writes: Sequence[Write]) -> Step[BulkWriteResult | None]:
        """Stage the write of standings, only where nobody wrote since they were read, in one
        unordered bulk write; after the commit, the step's `refused` are the positions of
        those another writer changed meanwhile (read them again and redo their credits).

        Each write is the insert of a new standing or an upsert guarded by the version read,
        so a lost race is a duplicate key at its index either way (the step's `refused`) and
        every write that was not refused did apply: its events are exactly what the unit of
        work publishes. Any other failure raises from the commit.
        """
        return self.uow.bulk(
            self.store.standings, list(writes), ordered=False, skip_duplicates=True
        )


class CampaignsUnitOfWork(UnitOfWork):
    """A campaigns use case's unit of work, owning the service's repositories."""

    def __init__(self, relay: Publisher, store: CampaignsStore) -> None:
        super().__init__(relay)
        self.campaigns: CampaignsRepository = CampaignsRepository(self, store)
        self.standings: StandingsRepository = StandingsRepository(self, store)

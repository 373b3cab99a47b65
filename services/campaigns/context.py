"""What the campaigns routes use, made once by the composition root (`app.compose`): the use
cases, the store for plain reads, the service's one clock and the count of stored documents a
list leaves out. Routes reach it one way: a parameter `ctx: CampaignsDep`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.campaigns.store import CampaignsStore
from services.campaigns.usecases import Lifecycle, Scoring
from shared.clock import Clock
from shared.service import context_of
from shared.skipped import SkippedDocuments


@dataclass(frozen=True)
class Campaigns:
    store: CampaignsStore
    lifecycle: Lifecycle
    scoring: Scoring
    #: The runtime's clock (the one the use cases were given): what "now" is for a read.
    clock: Clock
    #: Stored documents a list left out (`sarafan_documents_skipped_total`).
    skipped: SkippedDocuments


campaigns_of = context_of(Campaigns)

CampaignsDep = Annotated[Campaigns, Depends(campaigns_of)]

"""What the notifier's routes use, made once by the composition root (`app.compose`): the use
cases' object (`usecases.Notifier`) and the count of stored documents a list leaves out.
Routes reach it one way: a parameter `ctx: NotifierDep`.

Named `NotifierContext`: `Notifier` is the use cases' own object, which the handlers and the
jobs are given directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.notifier.usecases import Notifier
from shared.clock import Clock
from shared.service import context_of
from shared.skipped import SkippedDocuments


@dataclass(frozen=True)
class NotifierContext:
    notifier: Notifier
    #: The runtime's clock (the one the fan-out and the dispatcher were given).
    clock: Clock
    #: Stored documents a list left out (`sarafan_documents_skipped_total`).
    skipped: SkippedDocuments


notifier_of = context_of(NotifierContext)

NotifierDep = Annotated[NotifierContext, Depends(notifier_of)]

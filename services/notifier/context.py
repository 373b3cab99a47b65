"""What the notifier's routes use, made once by the composition root (`app.compose`): its use
cases (`usecases.NotifierUseCases`, the object the event handlers are given too) and the count
of stored documents a list leaves out. Routes reach it one way: a parameter `ctx: NotifierDep`,
and a use case as `ctx.use_cases.<method>`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.notifier.usecases import NotifierUseCases
from shared.clock import Clock
from shared.service import context_of
from shared.skipped import SkippedDocuments


@dataclass(frozen=True)
class NotifierContext:
    use_cases: NotifierUseCases
    #: The runtime's clock (the one the fan-out and the dispatcher were given).
    clock: Clock
    #: Stored documents a list left out (`sarafan_documents_skipped_total`).
    skipped: SkippedDocuments


notifier_of = context_of(NotifierContext)

NotifierDep = Annotated[NotifierContext, Depends(notifier_of)]

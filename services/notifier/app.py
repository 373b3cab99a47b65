"""Notifier service composition root: settings, channels, fan-out, delivery workers, HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Annotated

from fastapi import FastAPI
from pydantic import BeforeValidator, Field
from pydantic_settings import SettingsConfigDict

from services.notifier import api
from services.notifier.channels import Channel, EmailChannel, TelegramChannel, WebhookChannel
from services.notifier.consumers import NotifierHandlers, subscriptions
from services.notifier.context import NotifierContext
from services.notifier.dispatcher import Dispatcher, DispatchSettings
from services.notifier.fanout import Fanout, Limits
from services.notifier.pacing import Pace
from services.notifier.reminder_job import Reminders
from services.notifier.store import NotifierStore, NotifierUnitOfWork
from services.notifier.unsubscribe import UnsubscribeLinks, mailbox, members_url
from services.notifier.usecases import NotifierUseCases
from shared.bus import STREAMS, Bus
from shared.clock import Clock, utcnow
from shared.service import Composed, Runtime, create_app
from shared.settings import ServiceSettings, load_settings
from shared.unsubscribe import UnsubscribeSecret

SERVICE = "notifier"
log = logging.getLogger("sarafan.notifier")
Job = Callable[[], Awaitable[None]]


class NotifierSettings(ServiceSettings):
    """A channel whose settings are missing is off; the in-app inbox is always on."""

    # A refused value is not echoed: it may be a secret.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    smtp_url: str | None = Field(None, alias="SMTP_URL")
    email_from: str = Field("Sarafan <noreply@sarafan.local>", alias="SARAFAN_NOTIFIER_EMAIL_FROM")
    smtp_connections: int = Field(8, alias="SARAFAN_NOTIFIER_SMTP_CONNECTIONS", ge=1, le=100)
    unsubscribe_secret: UnsubscribeSecret = Field(None, alias="SARAFAN_UNSUBSCRIBE_SECRET")
    public_members_url: Annotated[str | None, BeforeValidator(members_url)] = Field(
        None, alias="SARAFAN_PUBLIC_MEMBERS_URL"
    )
    unsubscribe_mailto: Annotated[str | None, BeforeValidator(mailbox)] = Field(
        None, alias="SARAFAN_UNSUBSCRIBE_MAILTO"
    )
    unsubscribe_link_days: int = Field(90, alias="SARAFAN_UNSUBSCRIBE_LINK_DAYS", ge=1, le=3650)
    webhook_url: str | None = Field(None, alias="WEBHOOK_URL")
    webhook_secret: str | None = Field(None, alias="WEBHOOK_SECRET")
    telegram_api_url: str = Field("https://api.telegram.org", alias="TELEGRAM_API_URL")
    telegram_bot_token: str | None = Field(None, alias="TELEGRAM_BOT_TOKEN")
    daily_budget: int = Field(5, alias="SARAFAN_NOTIFIER_DAILY_BUDGET", ge=1)
    max_attempts: int = Field(5, alias="SARAFAN_NOTIFIER_MAX_ATTEMPTS", ge=1)
    retry_base_seconds: float = Field(2.0, alias="SARAFAN_NOTIFIER_RETRY_BASE_SECONDS", gt=0)
    retry_max_seconds: float = Field(900.0, alias="SARAFAN_NOTIFIER_RETRY_MAX_SECONDS", gt=0)
    poll_seconds: float = Field(1.0, alias="SARAFAN_NOTIFIER_POLL_SECONDS", gt=0)
    claim_batch: int = Field(200, alias="SARAFAN_NOTIFIER_CLAIM_BATCH", ge=1)
    send_concurrency: int = Field(32, alias="SARAFAN_NOTIFIER_SEND_CONCURRENCY", ge=1)
    # Each push channel's pace, its peer's limits (per replica): sends a second (0: no limit)
    # and sends at once. Telegram's bots may send about 30 messages a second; an SMTP server
    # is held by the connection pool (a send waits for a free connection) and its rate.
    telegram_rate: float = Field(30.0, alias="SARAFAN_NOTIFIER_TELEGRAM_RATE", ge=0, le=10_000)
    telegram_concurrency: int = Field(8, alias="SARAFAN_NOTIFIER_TELEGRAM_CONCURRENCY", ge=1)
    email_rate: float = Field(0.0, alias="SARAFAN_NOTIFIER_EMAIL_RATE", ge=0, le=10_000)
    webhook_rate: float = Field(0.0, alias="SARAFAN_NOTIFIER_WEBHOOK_RATE", ge=0, le=10_000)
    webhook_concurrency: int = Field(16, alias="SARAFAN_NOTIFIER_WEBHOOK_CONCURRENCY", ge=1)
    lease_seconds: float = Field(120.0, alias="SARAFAN_NOTIFIER_LEASE_SECONDS", gt=0)
    send_timeout_seconds: float = Field(10.0, alias="SARAFAN_NOTIFIER_SEND_TIMEOUT_SECONDS", gt=0)
    fanout_batch: int = Field(1000, alias="SARAFAN_NOTIFIER_FANOUT_BATCH", ge=1)
    reminder_seconds: float = Field(30.0, alias="SARAFAN_NOTIFIER_REMINDER_SECONDS", gt=0)


def unsubscribe_links(settings: NotifierSettings) -> UnsubscribeLinks:
    secret = settings.unsubscribe_secret
    return UnsubscribeLinks(
        secret=secret.get_secret_value() if secret else None,
        members_url=settings.public_members_url,
        mailto=settings.unsubscribe_mailto,
        lifetime=timedelta(days=settings.unsubscribe_link_days),
    )


def build_channels(settings: NotifierSettings) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    timeout = settings.send_timeout_seconds
    if settings.smtp_url:
        links = unsubscribe_links(settings)
        if why := links.missing():
            # Said once, at start: the mailbox providers expect a one-click unsubscribe from
            # bulk senders (docs/notifier.md, "Unsubscribing").
            log.warning("e-mail: %s", why)
        channels["email"] = EmailChannel(
            settings.smtp_url,
            settings.email_from,
            timeout,
            connections=settings.smtp_connections,
            unsubscribe=links,
        )
    if settings.webhook_url and settings.webhook_secret:
        channels["webhook"] = WebhookChannel(settings.webhook_url, settings.webhook_secret, timeout)
    if settings.telegram_bot_token and settings.telegram_api_url:
        channels["telegram"] = TelegramChannel(
            settings.telegram_api_url, settings.telegram_bot_token, timeout
        )
    return channels


def channel_paces(settings: NotifierSettings) -> dict[str, Pace]:
    """Each push channel's pace: e-mail as many at once as the pool has connections."""
    return {
        "telegram": Pace(settings.telegram_concurrency, settings.telegram_rate),
        "email": Pace(settings.smtp_connections, settings.email_rate),
        "webhook": Pace(settings.webhook_concurrency, settings.webhook_rate),
    }


def dispatch_settings(settings: NotifierSettings) -> DispatchSettings:
    return DispatchSettings(
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        retry_max_seconds=settings.retry_max_seconds,
        poll_seconds=settings.poll_seconds,
        claim_batch=settings.claim_batch,
        concurrency=settings.send_concurrency,
        lease=timedelta(seconds=settings.lease_seconds),
        paces=channel_paces(settings),
    )


def declare_sources(bus: Bus) -> Job:
    """A job declaring the streams the notifier reads, if their producers have not yet.

    With exactly the producer's configuration (`Bus.ensure_streams`), so the notifier can start
    first or alone (`sarafan run notifier`, a test with members only) and become ready; a
    producer that starts later finds its stream as it would have made it. The streams are the
    ones its subscriptions read (`consumers.subscriptions`), each with its producing service.
    """
    producers = {stream: service for service, stream in STREAMS.items()}
    sources = {stream: producers[stream] for stream in subscriptions.streams}

    async def job() -> None:
        while True:
            try:
                # The bus signals nothing before it binds consumers, which waits for these.
                while not bus.streams_ready:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await bus.ensure_streams(sources)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("declaring source streams failed: %r; retrying", exc)
                await asyncio.sleep(1)

    return job


def closing(channels: dict[str, Channel]) -> Job:
    """A job that holds the channels' HTTP clients open until the service stops."""

    async def job() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            for channel in channels.values():
                await channel.close()

    return job


@dataclass(frozen=True)
class NotifierJobs:
    """What runs on its own in the notifier: the deliveries' dispatcher and the reminders."""

    dispatcher: Dispatcher
    reminders: Reminders


def build(settings: NotifierSettings | None = None, clock: Clock = utcnow) -> FastAPI:
    return compose(settings, clock).app


def compose(
    settings: NotifierSettings | None = None, clock: Clock = utcnow
) -> Composed[NotifierStore]:
    """The service's composition root: every part made and wired once, here."""
    settings = settings or load_settings(NotifierSettings, SERVICE)
    runtime = Runtime(SERVICE, settings, clock)
    store = NotifierStore(runtime.db)
    channels = build_channels(settings)
    # The unit of work of the fan-out and the dispatcher, owning the service's repositories.
    uow = partial(NotifierUnitOfWork, runtime.relay, store)
    dispatcher = Dispatcher(
        store, uow, channels, dispatch_settings(settings), runtime.metrics, runtime.clock
    )
    fanout = Fanout(
        store,
        uow,
        runtime.metrics,
        frozenset(channels),
        Limits(daily_budget=settings.daily_budget, fanout_batch=settings.fanout_batch),
        runtime.clock,
        dispatcher.wake,
        # Fan-outs skip a member projection they cannot read (and log its id).
        runtime.skipped,
    )
    reminders = Reminders(store, fanout, runtime.metrics, settings.fanout_batch)
    use_cases = NotifierUseCases(store, fanout, runtime.bus, reminders)
    runtime.init_hooks.append(store.ensure_indexes)
    runtime.subscribe(subscriptions, NotifierHandlers(use_cases))
    runtime.jobs += [
        declare_sources(runtime.bus),
        closing(channels),
        dispatcher.run,
        reminders.job(settings.reminder_seconds),
    ]
    app = create_app(
        runtime,
        [api.router],
        title="Sarafan notifier",
        description="Fans messages out to members: in-app, email, webhook, telegram.",
        context=NotifierContext(use_cases, runtime.clock, runtime.skipped),
    )
    return Composed(app, store, NotifierJobs(dispatcher, reminders))

"""NATS security for real: a nats-server with the users of deploy/nats, each service as itself."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.api import StreamConfig

from sarafan.nats_auth import (
    ADMIN_USER,
    CONSUMERS,
    HEADER,
    accounts,
    env_references,
    helm_references,
    helm_values,
    integration_consumers,
    nats_conf,
    password_variable,
    users,
)
from shared.bus import STREAMS
from shared.events import CampaignStarted, new_event, utcnow
from shared.topology import SERVICES
from tests.helpers import strong_token, wait_until
from tests.integration.conftest import join_body, run_service

ROOT = Path(__file__).resolve().parents[2]


def _build(name: str) -> tuple[Any, Any]:
    module = importlib.import_module(f"services.{name}.app")
    return module.build, getattr(module, f"{name.capitalize()}Settings")


#: Every service of the topology, each with its app factory and settings.
BUILDS = {name: _build(name) for name in SERVICES}


def module_compose(name: str) -> Any:
    return __import__(f"services.{name}.app", fromlist=["compose"]).compose


async def _connect(secured, user: str, errors: list[str] | None = None, **kw) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    return await nats.connect(
        secured.url, user=user, password=secured.passwords[user], error_cb=on_error, **kw
    )


def test_deploy_accounts_file_is_the_generated_permission_table():
    # Generated with the default integration consumers, or SARAFAN_INTEGRATION_CONSUMERS's.
    text = (ROOT / "deploy/nats/accounts.conf").read_text()
    assert text == HEADER + nats_conf(env_references(), integration_consumers()), (
        "deploy/nats/accounts.conf is stale: "
        "python -m sarafan.nats_auth > deploy/nats/accounts.conf"
    )
    conf = (ROOT / "deploy/nats/nats.conf").read_text()
    assert "include accounts.conf" in conf and "sync_interval: always" in conf


def test_helm_values_carry_the_same_accounts():
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")
    values = yaml.safe_load((ROOT / "deploy/k8s/nats/values.yaml").read_text())
    merged = values["config"]["merge"]
    expected = accounts(helm_references(), integration_consumers())
    assert merged["accounts"] == expected["accounts"]
    assert merged["system_account"] == expected["system_account"]


def test_helm_values_generated_blocks_are_current_and_feed_every_password():
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")
    path = ROOT / "deploy/k8s/nats/values.yaml"
    text = path.read_text()
    assert text == helm_values(text, integration_consumers()), (
        "deploy/k8s/nats/values.yaml is stale: python -m sarafan.nats_auth --helm"
    )
    # The chart takes a map (name → value or valueFrom), never a list (tests/ops/test_k8s.py).
    env = yaml.safe_load(text)["container"]["env"]
    assert isinstance(env, dict)
    (secret,) = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy/k8s/base/config.yaml").read_text())
        if d["kind"] == "Secret" and d["metadata"]["name"] == "sarafan-nats"
    ]
    for user in users():
        assert password_variable(user) in secret["stringData"], user
        variable = password_variable(user)
        assert env[variable]["valueFrom"]["secretKeyRef"] == {
            "name": "sarafan-nats",
            "key": variable,
        }


def test_every_consumer_a_service_declares_is_in_the_permission_table():
    for name, (build, settings_cls) in BUILDS.items():
        app = build(settings_cls(SARAFAN_API_TOKEN=strong_token()))
        declared = {(c.stream, c.name) for c in app.state.runtime.bus.consumers}
        assert declared == set(CONSUMERS[name]), f"{name}: binds other consumers than it declares"


async def test_members_user_cannot_publish_campaign_events_nor_read_other_inboxes(secured_nats):
    admin = await _connect(secured_nats, ADMIN_USER)
    js = admin.jetstream()
    await js.add_stream(StreamConfig(name="CAMPAIGNS", subjects=["campaigns.>"]))
    errors: list[str] = []
    members = await _connect(secured_nats, "members", errors, inbox_prefix="_INBOX_members")
    try:
        event = new_event(
            CampaignStarted(
                campaign_id="c1",
                name="Forged",
                kind="contest",
                audience={},
                starts_at=utcnow(),
                ends_at=utcnow(),
                announcement={"ru": "x", "en": "x"},
            )
        )
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await members.jetstream().publish(
                event.nats_subject, event.to_json(), stream="CAMPAIGNS", timeout=1
            )
        await members.subscribe("_INBOX_notifier.>")
        await members.subscribe("campaigns.>")
        await members.flush()
        await wait_until(lambda: len(errors) >= 3, message=f"violations not reported: {errors}")
        assert any("publish" in e.lower() and "campaigns.campaign-started" in e for e in errors)
        assert any(
            "subscription" in e.lower() and "_inbox_notifier" in e.lower() for e in errors
        ), errors
        assert (await js.stream_info("CAMPAIGNS")).state.messages == 0
        # The server logs violations: the other test's "no violation" check can see them.
        assert "Publish Violation" in secured_nats.log.read_text()
    finally:
        await members.close()
        await admin.close()


async def test_every_service_works_with_its_own_user(secured_nats, mongo_url, db_prefix):
    """Join → welcome (members → notifier), engagement and campaigns bind their consumers, a
    poison message is dead-lettered, an erasure erases stream messages — and the server logs no
    permission violation for any service."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        s = {}
        for name, (_, settings_cls) in BUILDS.items():
            s[name] = await stack.enter_async_context(
                run_service(
                    module_compose(name),
                    settings_cls,
                    nats_url=secured_nats.url,
                    mongo_url=mongo_url,
                    database=f"{db_prefix}_{name}",
                    **secured_nats.settings_for(name),
                )
            )
        r = await s["members"].http.post("/v1/members", json=join_body(display_name="Vera"))
        assert r.status_code == 201, r.text
        mid = r.json()["member_id"]

        async def welcomed():
            got = await s["notifier"].http.get(f"/v1/members/{mid}/inbox")
            return got.json()["items"]

        await wait_until(welcomed, timeout=20, message="no welcome with per-service users")

        admin = await _connect(secured_nats, ADMIN_USER)
        try:
            js = admin.jetstream()
            await js.publish("members.member-joined.poison", b"not json", stream="MEMBERS")

            # Every consumer of MEMBERS dead-letters it on its own.
            readers = sum(1 for c in CONSUMERS.values() for stream, _ in c if stream == "MEMBERS")

            async def dead_lettered():
                return (await js.stream_info("DLQ")).state.messages >= readers

            await wait_until(dead_lettered, timeout=20, message="poison not dead-lettered")
            r = await s["members"].http.delete(f"/v1/members/{mid}", params={"erase": "true"})
            assert r.status_code in (200, 202, 204), r.text

            async def erased():
                info = await js.stream_info("MEMBERS", subjects_filter=f"members.*.{mid}")
                return not info.state.subjects

            await wait_until(erased, timeout=20, message="MEMBERS still names the member")
            for stream in STREAMS.values():
                await js.stream_info(stream)
        finally:
            await admin.close()
    await asyncio.sleep(0)
    log = secured_nats.log.read_text()
    assert "Violation" not in log, log[-3000:]  # publish, subscription or authorization

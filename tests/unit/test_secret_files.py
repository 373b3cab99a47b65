"""Every secret setting is also read from the file `<NAME>_FILE` names (compose and k8s secrets),
in one place: shared/settings.py `SECRET_SETTINGS` and its settings source."""

from __future__ import annotations

import importlib
import re

import pytest

from shared.settings import SECRET_SETTINGS, OpsConfig, load_settings
from shared.topology import SERVICES
from tests.helpers import strong_token


def _settings_class(service: str):
    module = importlib.import_module(f"services.{service}.app")
    return getattr(module, f"{service.capitalize()}Settings")


def _secret_fields(service: str) -> dict[str, str]:
    """alias → field name of the service's secret settings."""
    fields = _settings_class(service).model_fields
    return {f.alias: name for name, f in fields.items() if f.alias in SECRET_SETTINGS}


def test_every_setting_that_holds_a_secret_is_a_secret_setting():
    looks_secret = re.compile(r"[A-Z0-9_]*(PASSWORD|TOKEN|SECRET|KEY)|MONGODB_URL|SMTP_URL")
    for service in SERVICES:
        aliases = {f.alias for f in _settings_class(service).model_fields.values() if f.alias}
        unlisted = {a for a in aliases if looks_secret.fullmatch(a)} - SECRET_SETTINGS
        assert not unlisted, f"{service}: add {unlisted} to shared.settings.SECRET_SETTINGS"


@pytest.mark.parametrize("service", SERVICES)
def test_each_secret_setting_of_a_service_is_read_from_its_file(service, tmp_path, monkeypatch):
    fields = _secret_fields(service)
    assert {"NATS_PASSWORD", "MONGODB_URL", "SARAFAN_API_TOKEN"} <= set(fields)
    values = {}
    for alias in fields:
        value = strong_token()
        if alias.endswith("_URL"):
            value = f"{'smtp' if alias == 'SMTP_URL' else 'mongodb'}://u:{value}@host:1/"
        values[alias] = value
        (tmp_path / alias).write_text(value + "\n")  # the newline `echo` leaves is dropped
        monkeypatch.delenv(alias, raising=False)
        monkeypatch.setenv(f"{alias}_FILE", str(tmp_path / alias))
    settings = load_settings(_settings_class(service), service)
    for alias, name in fields.items():
        read = getattr(settings, name)
        read = read.get_secret_value() if hasattr(read, "get_secret_value") else read
        assert read == values[alias], alias


def test_a_weak_secret_in_a_file_is_refused_like_one_in_the_environment(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("change-me-api-token\n")
    monkeypatch.setenv("SARAFAN_API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.delenv("SARAFAN_API_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="SARAFAN_API_TOKEN is an example value"):
        load_settings(_settings_class("members"), "members")


def test_a_secret_set_twice_or_an_unreadable_file_stops_the_service_naming_the_variable(
    tmp_path, monkeypatch
):
    (tmp_path / "password").write_text(strong_token())
    monkeypatch.setenv("NATS_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("NATS_PASSWORD", strong_token())
    with pytest.raises(SystemExit, match="set NATS_PASSWORD or NATS_PASSWORD_FILE, not both"):
        load_settings(_settings_class("engagement"), "engagement")
    monkeypatch.delenv("NATS_PASSWORD")
    monkeypatch.setenv("NATS_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SystemExit, match=r"NATS_PASSWORD_FILE: cannot read .*absent"):
        load_settings(_settings_class("engagement"), "engagement")


def test_the_operator_commands_read_their_secrets_from_files_too(tmp_path):
    token, password = strong_token(), strong_token()
    (tmp_path / "token").write_text(token)
    (tmp_path / "password").write_text(password)
    (tmp_path / "url").write_text("mongodb://backup:x@mongo:27017/?replicaSet=rs0")
    config = OpsConfig.from_env(
        {
            "SARAFAN_HOME": str(tmp_path / "none"),
            "NATS_USER": "admin",
            "NATS_PASSWORD_FILE": str(tmp_path / "password"),
            "SARAFAN_API_TOKEN_FILE": str(tmp_path / "token"),
            "MONGODB_URL_FILE": str(tmp_path / "url"),
        }
    )
    assert (config.api_token, config.nats_password) == (token, password)
    assert config.mongodb_url.startswith("mongodb://backup:x@mongo")

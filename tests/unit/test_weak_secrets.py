"""No weak secrets: the example values the repository ships, or short ones, stop the services,
`sarafan up`, the NATS permission table and compose's `check-secrets` (shared/weak_secrets.py)."""

from __future__ import annotations

import io
import json
import re
import secrets
import socket
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from sarafan.cli import main as sarafan
from sarafan.embedded import free_port
from sarafan.home_secrets import api_token, nats_passwords
from sarafan.nats_auth import env_references, helm_references, nats_conf, users
from sarafan.supervisor import run_up
from services.campaigns.app import CampaignsSettings
from services.engagement.app import EngagementSettings
from services.members.app import MembersSettings
from services.notifier.app import NotifierSettings
from shared.settings import load_settings
from shared.topology import PORTS
from shared.weak_secrets import EXAMPLE_SECRETS, MIN_LENGTH, environment_refusals, weakness

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "members": MembersSettings,
    "engagement": EngagementSettings,
    "campaigns": CampaignsSettings,
    "notifier": NotifierSettings,
}
#: `NAME=value` or `NAME: value` (on one line: a value below it is a mapping) where the name
#: says it holds a secret.
ASSIGNED = re.compile(
    r"""(?P<name>[A-Za-z0-9_]*(?:password|token|secret))["']?[ \t]*[=:][ \t]*["']?"""
    r"""(?P<value>[^\s"'#,;)`]+)""",
    re.IGNORECASE,
)
#: A password inside a URL: scheme://user:password@host.
IN_URL = re.compile(r"://[^:/\s@\[]+:(?P<value>[^@/\s]+)@")


def example_files() -> list[Path]:
    """The files an operator copies from or reads examples in: .env.example, compose, the
    README, the docs and every text file of deploy/ (not its code)."""
    files = [ROOT / ".env.example", ROOT / "docker-compose.yml", ROOT / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted(
        p for p in (ROOT / "deploy").rglob("*") if p.is_file() and p.suffix not in {".py"}
    )
    return files


def placeholders_in(text: str) -> set[str]:
    """Every literal secret value in the text: variable references (`$X`, `${X}`, `<< $X >>`,
    compose's `${X:?message}`), `<what to put here>`, `...` and code (a call) are not values."""
    found = {m["value"] for m in ASSIGNED.finditer(text)} | {
        m["value"] for m in IN_URL.finditer(text)
    }
    return {
        value
        for value in found
        if not value.startswith(("$", "<", "{", "[", "?"))
        and set(value) - {".", "…"}
        and "(" not in value
    }


def test_every_placeholder_secret_in_the_example_files_is_on_the_refused_list():
    found: dict[str, str] = {}
    for path in example_files():
        for value in placeholders_in(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(value, str(path.relative_to(ROOT)))
    # The scan sees the placeholders it must (else it proves nothing).
    assert {"change-me", "change-me-to-32-random-characters-or-more"} <= set(found), found
    missing = {value: where for value, where in found.items() if value not in EXAMPLE_SECRETS}
    assert not missing, f"add to shared/weak_secrets.py EXAMPLE_SECRETS: {missing}"


@pytest.mark.parametrize("value", sorted(EXAMPLE_SECRETS))
def test_every_example_value_is_refused(value):
    assert weakness(value) == "is an example value from the repository"


def test_a_secret_shorter_than_32_characters_is_refused_and_a_generated_one_accepted():
    assert MIN_LENGTH == 32
    assert weakness("x" * 31) == "is shorter than 32 characters"
    assert weakness("x" * 32) is None
    assert weakness(secrets.token_urlsafe(32)) is None


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_service_refuses_to_start_with_an_example_token_and_says_which_variable(
    service, monkeypatch
):
    monkeypatch.setenv("SARAFAN_API_TOKEN", "change-me-api-token")
    with pytest.raises(SystemExit) as stopped:
        load_settings(SETTINGS[service], service)
    message = str(stopped.value.code)
    assert message.startswith(f"sarafan {service}: refusing to start: SARAFAN_API_TOKEN is an")
    assert "token_urlsafe(32)" in message


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_service_refuses_a_short_or_example_nats_password(service, monkeypatch):
    for weak in ("change-me", "s3cret-but-short"):
        monkeypatch.setenv("NATS_PASSWORD", weak)
        with pytest.raises(SystemExit, match="NATS_PASSWORD is"):
            load_settings(SETTINGS[service], service)


def test_an_empty_token_is_a_keys_only_deployment_and_a_strong_one_is_taken(monkeypatch):
    monkeypatch.setenv("SARAFAN_API_TOKEN", "")
    assert load_settings(MembersSettings, "members").api_token == ""
    strong = secrets.token_urlsafe(32)
    monkeypatch.setenv("SARAFAN_API_TOKEN", strong)
    monkeypatch.setenv("NATS_PASSWORD", secrets.token_urlsafe(32))
    assert load_settings(MembersSettings, "members").api_token == strong


def _up_environ(home: Path, **extra: str) -> dict[str, str]:
    ports = {f"SARAFAN_{name.upper()}_PORT": str(free_port()) for name in PORTS}
    for name in ("NATS", "NATS_HTTP", "MONGO"):
        ports[f"SARAFAN_{name}_PORT"] = str(free_port())
    return {"SARAFAN_HOME": str(home), **ports, **extra}


def test_sarafan_up_refuses_an_example_token_before_starting_anything(tmp_path):
    home = tmp_path / "home"
    err = io.StringIO()
    with redirect_stderr(err):
        code = run_up(_up_environ(home, SARAFAN_API_TOKEN="change-me-api-token"))
    assert code == 1
    assert "sarafan up: SARAFAN_API_TOKEN is an example value" in err.getvalue()
    assert not list((home / "pids").glob("*.pid"))
    assert not (home / "nats.conf").exists()


def test_a_weak_token_is_refused_even_when_a_port_is_taken(tmp_path):
    environ = _up_environ(tmp_path / "home", SARAFAN_API_TOKEN="change-me-api-token")
    with socket.socket() as taken:  # something else listens on the NATS port
        taken.bind(("127.0.0.1", int(environ["SARAFAN_NATS_PORT"])))
        taken.listen()
        err = io.StringIO()
        with redirect_stderr(err):
            code = run_up(environ)
    assert code == 1
    assert "SARAFAN_API_TOKEN is an example value" in err.getvalue()


def test_sarafan_up_refuses_a_weak_stored_token_or_nats_password(tmp_path):
    (tmp_path / "api-token").write_text("short\n")
    with pytest.raises(ValueError, match="api-token is shorter than 32"):
        api_token(tmp_path, {})
    (tmp_path / "nats-users.json").write_text(json.dumps({"admin": "change-me"}))
    with pytest.raises(ValueError, match=r"password of 'admin' .* is an example value"):
        nats_passwords(tmp_path)


def test_sarafan_up_makes_strong_secrets_and_keeps_them(tmp_path):
    token, created = api_token(tmp_path, {})
    assert created and weakness(token) is None
    assert api_token(tmp_path, {}) == (token, False)
    passwords = nats_passwords(tmp_path)
    assert set(passwords) == set(users())
    assert all(weakness(p) is None for p in passwords.values())
    assert nats_passwords(tmp_path) == passwords


def test_the_nats_permission_table_refuses_a_weak_literal_password_but_takes_references():
    strong = {user: secrets.token_urlsafe(32) for user in users()}
    assert "accounts" in nats_conf(strong)
    assert "$NATS_ADMIN_PASSWORD" in nats_conf(env_references())
    assert "<< $NATS_ADMIN_PASSWORD >>" in nats_conf(helm_references())
    with pytest.raises(ValueError, match="NATS password of 'sys' is an example value"):
        nats_conf({**strong, "sys": "change-me"})
    with pytest.raises(ValueError, match="shorter than 32"):
        nats_conf({**strong, "members": "members-password"})


#: The secrets an operator sets in an environment (k8s Secrets, an older compose .env), each
#: with one of the repository's example values.
EXAMPLE_ENVIRONMENT = {
    "SARAFAN_API_TOKEN": "change-me-api-token",
    "SARAFAN_UNSUBSCRIBE_SECRET": "change-me-unsubscribe-secret-of-32-characters",
    "MONGO_ROOT_PASSWORD": "change-me-mongo",
    "GRAFANA_ADMIN_PASSWORD": "change-me-grafana",
    **{f"NATS_{user.upper()}_PASSWORD": "change-me" for user in users()},
}


def test_check_secrets_refuses_every_example_secret_of_the_environment(monkeypatch, capsys):
    refusals = environment_refusals(EXAMPLE_ENVIRONMENT)
    assert len(refusals) == len(EXAMPLE_ENVIRONMENT)
    for name, value in EXAMPLE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    assert sarafan(["check-secrets"]) == 1
    err = capsys.readouterr().err
    assert all(f"sarafan: {name} is an example value" in err for name in EXAMPLE_ENVIRONMENT), err


def test_check_secrets_reads_file_variables_and_the_password_of_a_url(tmp_path):
    (tmp_path / "token").write_text("change-me-api-token\n")
    (tmp_path / "url").write_text("mongodb://members:change-me@mongo:27017/?replicaSet=rs0\n")
    refused = environment_refusals(
        {
            "SARAFAN_API_TOKEN_FILE": str(tmp_path / "token"),
            "MONGODB_URL_FILE": str(tmp_path / "url"),
        }
    )
    assert [r.split(" is ")[0] for r in refused] == [
        "MONGODB_URL (its password)",
        "SARAFAN_API_TOKEN",
    ]
    missing = environment_refusals({"NATS_PASSWORD_FILE": str(tmp_path / "absent")})
    assert missing and missing[0].startswith("NATS_PASSWORD_FILE: cannot read")
    # A URL without a password holds nothing secret (the embedded stack's MongoDB).
    assert environment_refusals({"MONGODB_URL": "mongodb://127.0.0.1:27017"}) == []


def test_check_secrets_refuses_a_nats_password_nats_server_would_read_as_a_number():
    strong = secrets.token_urlsafe(40)
    refused = environment_refusals({"NATS_SYS_PASSWORD": "-" + strong})
    assert refused and "must start with a letter" in refused[0]
    assert environment_refusals({"NATS_SYS_PASSWORD": "s" + strong}) == []


def test_check_secrets_accepts_generated_secrets_and_an_empty_api_token():
    from sarafan.compose_secrets import token

    generated = {name: token() for name in EXAMPLE_ENVIRONMENT}
    assert environment_refusals(generated) == []
    assert environment_refusals({**generated, "SARAFAN_API_TOKEN": ""}) == []
    refused = environment_refusals({**generated, "NATS_SYS_PASSWORD": ""})
    assert refused and refused[0].startswith("NATS_SYS_PASSWORD is shorter than 32")

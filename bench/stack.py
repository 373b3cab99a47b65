"""Benchmark plumbing: the embedded stack on free ports, process memory, result files."""

from __future__ import annotations

import io
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sarafan.embedded import LOCALHOST, Child, free_port, http_ok, mongo_child, nats_child
from sarafan.nats_auth import ADMIN_USER
from sarafan.supervisor import Stack, StackConfig, nats_passwords
from shared.topology import SERVICES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: The bootstrap token of the benchmarks' stacks and services (a weak one is refused).
TOKEN = secrets.token_urlsafe(32)


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """These variables set in this process while the block runs (children started in it
    inherit them), the previous values back afterwards."""
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def running_stack(
    services: tuple[str, ...] = SERVICES,
    env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """`sarafan up` on free ports in a temporary home, stopped at the end; `env` is added to
    the services' environment (settings the benchmark needs, e.g. short job intervals)."""
    with tempfile.TemporaryDirectory(prefix="sarafan-bench-") as home:
        config = StackConfig.with_free_ports(Path(home))
        stack = Stack(
            config,
            services=services,
            out=io.StringIO(),
            environ={**os.environ, "SARAFAN_API_TOKEN": TOKEN},
        )
        with environment(env or {}):
            stack.start()  # stops what it started when it fails
        try:
            yield stack
        finally:
            stack.stop()


@contextmanager
def bare_service(stack: Stack, service: str = "members") -> Iterator[tuple[str, int]]:
    """The bare baseline (bench/bare_app.py) on the stack's nats-server and the nx-27017 of
    `service`'s database, as the operator (the stack's NATS has a user per service); yields its
    URL and process id, stopped at the end."""
    cfg = stack.config
    port = free_port()
    child = Child(
        "bare",
        [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--nats", cfg.nats_url,
         "--mongo", cfg.mongodb_url(service), "--nats-user", ADMIN_USER,
         f"--nats-password={nats_passwords(cfg.home)[ADMIN_USER]}"],  # may start with -
        log_path=cfg.home / "logs" / "bare.log",
        cwd=ROOT,
        ready_check=lambda: http_ok(f"http://{LOCALHOST}:{port}/healthz"),
    )  # fmt: skip
    child.die_with_parent = True
    child.start()
    try:
        child.wait_ready(30)
        yield f"http://{LOCALHOST}:{port}", child.pid or 0
    finally:
        child.stop()


@contextmanager
def embedded_servers() -> Iterator[tuple[str, str]]:
    """A nats-server and an nx-27017 on free ports in a temporary folder: (NATS, MongoDB) URLs."""
    with tempfile.TemporaryDirectory(prefix="sarafan-bench-") as home:
        nats_port, mongo_port = free_port(), free_port()
        servers = [
            nats_child(Path(home) / "nats", nats_port, free_port()),
            mongo_child(Path(home) / "mongo", mongo_port),
        ]
        try:
            for child in servers:
                child.start()
                child.wait_ready(30)
            yield f"nats://{LOCALHOST}:{nats_port}", f"mongodb://{LOCALHOST}:{mongo_port}"
        finally:
            for child in reversed(servers):
                child.stop()


def cpu_seconds(*pids: int) -> float:
    """User and system CPU time these processes have used so far, in seconds."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of one process (VmRSS) in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    kib = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    return round(kib / 1024, 1)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"{mem:.0f} GiB, Python {platform.python_version()}"
    )


def emit(result: dict[str, object]) -> None:
    print(json.dumps(result, ensure_ascii=False), flush=True)


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    block = f"## {title}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + block
    RESULTS.write_text(text)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def python() -> str:
    return sys.executable

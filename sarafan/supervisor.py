"""`sarafan up`: start the servers and every service, restart crashes, stop in order."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sarafan.embedded import (
    LOCALHOST,
    Aborted,
    Child,
    ChildExited,
    mongo_child,
    nats_child,
    port_is_free,
    service_flowing,
)
from sarafan.home_secrets import api_token, nats_passwords
from sarafan.mongo_checks import sqlite_secure_delete
from sarafan.nats_auth import (
    ADMIN_USER,
    INTEGRATION_USER,
    inbox_prefix,
    integration_consumers,
    nats_conf,
)
from sarafan.stack_config import StackConfig, StackError, mongo_name
from shared.topology import SERVICES

log = logging.getLogger("sarafan.supervisor")

POLL_SECONDS = 0.5
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
# A child that stays up this long is healthy again: its next crash restarts it quickly.
STABLE_SECONDS = 60.0


#: Printed when nx-27017's SQLite library was built without secure_delete (docs/members.md).
SECURE_DELETE_OFF = (
    "warning: nx-27017's SQLite does not overwrite deleted rows (secure_delete is off): an "
    "erased member's data stays in free space of the database files until it is reused"
)


@dataclass(eq=False)
class _Supervised:
    """Restart bookkeeping for one child."""

    child: Child
    attempts: int = 0
    restart_at: float | None = None  # monotonic time of the pending restart, if any
    last_exit: int | None = None


class Stack:
    """The embedded stack as child processes; `start()`, then `supervise()`, then `stop()`."""

    def __init__(
        self,
        config: StackConfig,
        *,
        services: Iterable[str] = SERVICES,
        environ: Mapping[str, str] = os.environ,
        out: TextIO | None = None,
        grace: float = 10.0,
        server_timeout: float = 30.0,
        service_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self.services = tuple(services)
        unknown = set(self.services) - set(config.service_ports)
        if unknown:
            raise ValueError(f"unknown services: {', '.join(sorted(unknown))}")
        self.environ = environ
        self.out = out or sys.stdout
        self.grace = grace
        self.server_timeout = server_timeout
        self.service_timeout = service_timeout
        self.token = ""
        #: Does nx-27017's SQLite overwrite deleted rows (None: it did not say)?
        self.secure_delete: bool | None = None
        self.nats_passwords: dict[str, str] = {}
        self.integration_consumers: tuple[str, ...] = ()
        self.children: dict[str, Child] = {}  # in start order: servers, then services
        self._supervised: dict[str, _Supervised] = {}
        self._stop = threading.Event()

    @property
    def logs_dir(self) -> Path:
        return self.config.home / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.config.home / "pids"

    def request_stop(self) -> None:
        """Ask `start()`/`supervise()` to return (safe from a signal handler or a thread)."""
        self._stop.set()

    def start(self) -> None:
        """Start everything and wait until it is ready; on failure stop what started."""
        home = self.config.home
        for directory in (home, self.logs_dir, self.pids_dir):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            # The outside services' durable consumers (SARAFAN_INTEGRATION_CONSUMERS).
            self.integration_consumers = integration_consumers(self.environ)
            # A weak token or password (an example value, a short one) stops here.
            self.token, created = api_token(home, self.environ)
            # Same users and permissions as compose and k8s: each service its own NATS user.
            self.nats_passwords = nats_passwords(home)
            accounts = nats_conf(self.nats_passwords, self.integration_consumers)
        except ValueError as exc:
            raise StackError(str(exc)) from exc
        # After the secrets: a weak one is refused whatever else is wrong (a port taken by
        # something else must not hide it).
        self._check_ports()
        self.children = {
            "nats-server": nats_child(
                home, self.config.nats_port, self.config.nats_http_port, accounts=accounts
            ),
        }
        for name in SERVICES:
            self.children[mongo_name(name)] = mongo_child(
                home, self.config.mongo_port_of(name), self.config.mongo_journal, mongo_name(name)
            )
        for name in self.services:
            self.children[name] = self._service_child(name)
        for child in self.children.values():
            # If the supervisor is killed outright, nothing is left holding the ports.
            child.die_with_parent = True
        self._rotate_logs()
        try:
            servers = [
                self.children["nats-server"],
                *(self.children[mongo_name(n)] for n in SERVICES),
            ]
            self._start_and_wait(servers, self.server_timeout)
            self.secure_delete = sqlite_secure_delete(self.config.mongo_port_of(SERVICES[0]))
            services = [self.children[name] for name in self.services]
            self._start_and_wait(services, self.service_timeout)
        except BaseException:
            self.stop()
            raise
        self._supervised = {name: _Supervised(child) for name, child in self.children.items()}
        self._print_summary(created)

    def supervise(self) -> None:
        """Restart children that exit, until `request_stop()`; does not stop them."""
        while not self._stop.wait(POLL_SECONDS):
            self.poll_once()

    def poll_once(self) -> None:
        """One supervision pass: notice exits, run due restarts, forgive stable children."""
        now = time.monotonic()
        for name, entry in self._supervised.items():
            child = entry.child
            if entry.restart_at is None:
                if child.alive():
                    if entry.attempts and now - child.started_at >= STABLE_SECONDS:
                        entry.attempts = 0
                    continue
                entry.last_exit = child.exit_code
                delay = min(BACKOFF_FIRST * 2**entry.attempts, BACKOFF_MAX)
                entry.attempts += 1
                entry.restart_at = now + delay
                log.warning(
                    "%s exited (exit code %s); restarting in %.1fs", name, entry.last_exit, delay
                )
            if self._stop.is_set():
                return  # stop() may be signalling the children from another thread
            if entry.restart_at is not None and now >= entry.restart_at:
                entry.restart_at = None
                try:
                    child.start()
                except OSError as exc:
                    # Counts as a crash: the next pass sees it not alive and backs off more.
                    log.error("could not restart %s: %s", name, exc)
                    continue
                self._write_pid(name, child)
                log.warning(
                    "restarted %s (exit code %s), attempt %d", name, entry.last_exit, entry.attempts
                )

    def stop(self) -> None:
        """Stop services first, then nats-server and nx-27017: SIGTERM, SIGKILL after grace."""
        self._stop.set()
        services = [c for n, c in self.children.items() if n in self.services]
        servers = [c for n, c in self.children.items() if n not in self.services]
        for group in (services, servers):
            # Signal the whole group at once so the grace periods run in parallel.
            for child in group:
                child.terminate()
            deadline = time.monotonic() + self.grace
            for child in group:
                child.stop(grace=max(0.0, deadline - time.monotonic()))
                (self.pids_dir / f"{child.name}.pid").unlink(missing_ok=True)

    def _service_child(self, name: str) -> Child:
        port = self.config.service_ports[name]
        url = self.config.service_url(name)
        return Child(
            name=name,
            argv=[sys.executable, "-m", f"services.{name}"],
            log_path=self.logs_dir / f"{name}.log",
            env={
                "NATS_URL": self.config.nats_url,
                "NATS_USER": name,
                "NATS_PASSWORD": self.nats_passwords[name],
                "MONGODB_URL": self.config.mongodb_url(name),
                "SARAFAN_API_TOKEN": self.token,
                f"SARAFAN_{name.upper()}_PORT": str(port),
                "SARAFAN_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",  # log lines reach the file as they happen
            },
            # Up means the events flow too (readiness alone does not wait for NATS).
            ready_check=lambda: service_flowing(url),
            ports=(port,),
        )

    def _start_and_wait(self, children: list[Child], timeout: float) -> None:
        for child in children:
            child.start()
            self._write_pid(child.name, child)
        for child in children:
            try:
                child.wait_ready(timeout, abort=self._stop.is_set)
            except (ChildExited, TimeoutError) as exc:
                raise StackError(str(exc)) from exc

    def _check_ports(self) -> None:
        wanted = {
            "nats-server": self.config.nats_port,
            "nats-server monitoring": self.config.nats_http_port,
        }
        wanted |= {mongo_name(name): self.config.mongo_port_of(name) for name in SERVICES}
        wanted |= {name: self.config.service_ports[name] for name in self.services}
        taken = [f"{port} ({name})" for name, port in wanted.items() if not port_is_free(port)]
        if taken:
            raise StackError(
                f"ports already in use: {', '.join(taken)}. Is another `sarafan up` running "
                f"(its pids are in {self.pids_dir})? Move ports with SARAFAN_NATS_PORT, "
                "SARAFAN_MONGO_PORT (the first of one port per service), SARAFAN_<SERVICE>_PORT."
            )

    def _rotate_logs(self) -> None:
        # Keep one previous run per child: nx-27017 logs every command, files grow fast.
        for child in self.children.values():
            if child.log_path.exists() and child.log_path.stat().st_size:
                child.log_path.replace(child.log_path.with_suffix(".log.1"))

    def _write_pid(self, name: str, child: Child) -> None:
        (self.pids_dir / f"{name}.pid").write_text(f"{child.pid}\n")

    def _print_summary(self, token_created: bool) -> None:
        config = self.config
        lines = ["sarafan is up:"]
        for name in self.services:
            url = config.service_url(name)
            lines.append(f"  {name:<11} {url}  (docs {url}/docs)")
        lines += [
            f"  {'nats':<11} {config.nats_url}  (monitoring http://{LOCALHOST}:"
            f"{config.nats_http_port})",
            f"  {'nats users':<11} one per service; operator: {ADMIN_USER} "
            f"(passwords in {config.home / 'nats-users.json'})",
            # How an outside service subscribes to the events (docs/operations.md).
            f"  {'integration':<11} {config.nats_url} as user {INTEGRATION_USER} (password: "
            f'"{INTEGRATION_USER}" in nats-users.json)',
            f"  {'':<11} inbox prefix {inbox_prefix(INTEGRATION_USER)}, durable consumers "
            f"{', '.join(self.integration_consumers)} (see examples/crm_sync.py)",
            f"  {'mongodb':<11} one nx-27017 per service, ports "
            f"{', '.join(str(config.mongo_port_of(n)) for n in SERVICES)} (SQLite journal "
            f"{config.mongo_journal})",
            f"  {'logs':<11} {self.logs_dir}",
            f"API token: {self.token}"
            + (f"  (new, stored in {config.home / 'api-token'})" if token_created else ""),
            "Press Ctrl-C to stop.",
        ]
        if self.secure_delete is False:
            lines.insert(-1, SECURE_DELETE_OFF)
        print("\n".join(lines), file=self.out, flush=True)


def run_up(environ: Mapping[str, str] = os.environ, services: Iterable[str] = SERVICES) -> int:
    """The `sarafan up` command: start, supervise until SIGINT/SIGTERM, stop; exit status.
    With no `services`, only nats-server and nx-27017 (`--servers-only`: restoring a backup)."""
    try:
        stack = Stack(StackConfig.from_env(environ), services=services, environ=environ)
    except StackError as exc:
        print(f"sarafan up: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: object) -> None:
        stack.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start()
        stack.supervise()
    except Aborted:
        pass  # Ctrl-C while starting: a normal stop
    except (StackError, FileNotFoundError) as exc:
        print(f"sarafan up: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack.children:
            print("sarafan: stopping services, then nats-server and nx-27017", file=sys.stderr)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

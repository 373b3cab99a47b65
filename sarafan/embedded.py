"""Child processes for the embedded stack: nats-server, nx-27017 and their readiness checks."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

LOCALHOST = "127.0.0.1"
POLL_INTERVAL = 0.05


class ChildExited(RuntimeError):
    """A child process ended while we were waiting for it to become ready."""


class Aborted(RuntimeError):
    """Waiting was abandoned because the caller asked to stop (Ctrl-C during start-up)."""


def find_executable(name: str) -> str:
    """The executable installed next to this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"{name} not found next to {sys.executable} nor on PATH "
        "(it comes with the project's `embedded` extra, which `make run` installs)"
    )


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS may hand it out again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive ports nobody listens on right now (one nx-27017 per
    service listens on a run of ports from SARAFAN_MONGO_PORT)."""
    for _ in range(100):
        first = free_port()
        if first + count < 65536 and all(port_is_free(first + i) for i in range(count)):
            return first
    raise OSError(f"no {count} free ports in a row")


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when nothing listens on the port (SO_REUSEADDR ignores sockets in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """One connection attempt."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Loopback checks must not go through an HTTP(S)_PROXY from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET url answers 200 (any error or other status is False)."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def service_flowing(url: str, timeout: float = 2.0) -> bool:
    """True when the service at `url` is ready and its events flow: `/readyz` answers 200 with
    every check true (NATS connected, streams and consumers bound: what `/readyz` reports
    without requiring it, since writes wait in the outbox while NATS is away)."""
    try:
        with _DIRECT.open(f"{url}/readyz", timeout=timeout) as response:
            checks = json.loads(response.read()).get("checks") or {}
            return bool(response.status == 200 and checks and all(checks.values()))
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return False


def mongo_ping(port: int, host: str = LOCALHOST, timeout: float = 1.0) -> bool:
    """True when the server answers a real `ping` command (a TCP accept is not enough)."""
    millis = int(timeout * 1000)
    client: MongoClient = MongoClient(
        f"mongodb://{host}:{port}",
        directConnection=True,
        serverSelectionTimeoutMS=millis,
        connectTimeoutMS=millis,
        socketTimeoutMS=millis,
    )
    try:
        return bool(client.admin.command("ping").get("ok"))
    except PyMongoError:
        return False
    finally:
        client.close()


def sqlite_secure_delete(port: int, host: str = LOCALHOST, timeout: float = 2.0) -> bool | None:
    """Whether nx-27017's SQLite library overwrites the space a deleted or rewritten row leaves
    (`PRAGMA secure_delete`, which nx-27017 answers for a command it does not know by name);
    None when the server does not say (real MongoDB, an error)."""
    millis = int(timeout * 1000)
    client: MongoClient = MongoClient(
        f"mongodb://{host}:{port}", directConnection=True, serverSelectionTimeoutMS=millis
    )
    try:
        rows = client.admin.command({"secure_delete": 1}).get("result") or []
        return bool(rows[0]["secure_delete"]) if rows else None
    except (PyMongoError, LookupError, TypeError):
        return None
    finally:
        client.close()


def nats_config(port: int, http_port: int, store_dir: Path, *, accounts: str | None = None) -> str:
    """nats-server configuration text: JetStream on, fsync on every write, loopback only.

    `max_payload` keeps the server default (1 MB). `accounts` is an accounts block (text from
    `sarafan.nats_auth.nats_conf`): `sarafan up` gives every service its own user as compose
    does; without it the server has no users (tests, benchmarks).
    """
    lines = [
        "# Generated by sarafan/embedded.py on every start; edits here are overwritten.",
        f"listen: {LOCALHOST}:{port}",
        f"http: {LOCALHOST}:{http_port}",
        "jetstream {",
        # JSON string quoting is valid in the NATS config grammar and survives odd paths.
        f"  store_dir: {json.dumps(str(store_dir))}",
        # The default (fsync every 2 minutes) can lose acknowledged messages on power
        # failure, as Jepsen showed for NATS 2.12.1; every server we configure sets `always`.
        "  sync_interval: always",
        "}",
    ]
    if accounts:
        lines.append(accounts.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies (even by
    SIGKILL), so a killed test run or `sarafan up` leaves no server holding its ports."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Looked up before the fork: the child must not dlopen between fork and exec.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    set_death_signal = 1  # PR_SET_PDEATHSIG from <linux/prctl.h>

    def hook() -> None:
        prctl(set_death_signal, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return hook


@dataclass(eq=False)
class Child:
    """One child process in its own process group, with its output in a log file.

    Signals go to the process group whose id is the child's own pid, and only while that
    pid is not yet reaped (so it cannot have been reused): never by process name.
    """

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)  # added to the parent's environment
    cwd: Path | None = None
    ready_check: Callable[[], bool] | None = None
    # Files the child refuses to start over after a crash (nx-27017's pid file).
    stale_files: Sequence[Path] = ()
    # Linux: SIGTERM the child when the thread that started it exits (the parent process
    # dying included), so start it from a thread that lives as long as you need it.
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    started_at: float = field(default=0.0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Launch the process; a previous run of this child must have exited."""
        with self._lock:
            if self.process is not None and self.process.returncode is None:
                if not self._exited():
                    raise RuntimeError(f"{self.name} is already running (pid {self.process.pid})")
                self._reap()
            for path in self.stale_files:
                path.unlink(missing_ok=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.argv,
                    env={**os.environ, **self.env},
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Own process group: Ctrl-C in the terminal reaches only the supervisor,
                    # which stops the children in order, and killpg reaches grandchildren.
                    start_new_session=True,
                    preexec_fn=_parent_death_hook() if self.die_with_parent else None,
                )
            self.started_at = time.monotonic()

    def alive(self) -> bool:
        """True while the process runs (an exited child stays unreaped until stop/start)."""
        with self._lock:
            return self.process is not None and not self._exited()

    @property
    def exit_code(self) -> int | None:
        """Exit status like Popen.returncode (-9 after SIGKILL); None while running."""
        with self._lock:
            proc = self.process
            if proc is None or proc.returncode is not None:
                return proc.returncode if proc is not None else None
            try:
                info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped behind our back: Popen records it as 0
                return proc.wait()
            if info is None:
                return None
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the process to end, without reaping it."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)
        return True

    def terminate(self) -> None:
        """Send SIGTERM to the process group and return at once."""
        self._signal_group(signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, SIGKILL it after `grace` seconds, reap; returns the exit code."""
        if self.process is None:
            return None
        self.terminate()
        if not self.wait_exit(grace):
            self._signal_group(signal.SIGKILL)
            self.wait_exit(5.0)
        with self._lock:
            return self._reap()

    def kill(self) -> None:
        """SIGKILL the group, as a crash would (fault tests); the exit stays visible to
        `alive()`/`exit_code` until the next `start()` or `stop()` reaps it."""
        self._signal_group(signal.SIGKILL)
        self.wait_exit(5.0)

    def wait_ready(self, timeout: float, abort: Callable[[], bool] | None = None) -> None:
        """Poll `ready_check` until it holds; ChildExited if the process dies first,
        TimeoutError after `timeout` seconds, Aborted as soon as `abort()` is true."""
        check = self.ready_check or self.alive
        deadline = time.monotonic() + timeout
        while True:
            code = self.exit_code
            if code is not None:
                raise ChildExited(
                    f"{self.name} exited with code {code} while starting; see {self.log_path}"
                )
            # Re-check the exit after a success: another server on the same port would
            # answer for a child that failed to bind.
            if check() and self.exit_code is None:
                return
            if abort is not None and abort():
                raise Aborted(f"stopped while waiting for {self.name}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} was not ready within {timeout:.0f}s; see {self.log_path}"
                )
            time.sleep(0.1)

    def _exited(self) -> bool:
        # Peek with WNOWAIT: the zombie keeps its pid (our pgid) reserved until _reap().
        proc = self.process
        if proc is None or proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _signal_group(self, sig: signal.Signals) -> None:
        with self._lock:
            proc = self.process
            if proc is None or proc.returncode is not None:
                return
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def _reap(self) -> int | None:
        # Caller holds the lock. Kill what is left of the group (grandchildren) while the
        # leader's pid is still reserved, then collect the leader's status.
        proc = self.process
        if proc is None:
            return None
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        return proc.returncode


def nats_child(data_dir: Path, port: int, http_port: int, accounts: str | None = None) -> Child:
    """nats-server with JetStream storing under data_dir/nats, config at data_dir/nats.conf
    (with `accounts`, the users and permissions of `sarafan.nats_auth`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "nats.conf"
    text = nats_config(port, http_port, data_dir / "nats", accounts=accounts)
    # Owner-only from creation: with accounts the file holds the passwords.
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    health = f"http://{LOCALHOST}:{http_port}/healthz?js-enabled-only=true"
    return Child(
        name="nats-server",
        argv=[find_executable("nats-server"), "-c", str(config)],
        log_path=data_dir / "logs" / "nats-server.log",
        ready_check=lambda: tcp_accepts(LOCALHOST, port) and http_ok(health),
    )


#: nx-27017's SQLite journal modes `sarafan up` offers (SARAFAN_MONGO_JOURNAL).
#:
#: - `wal` (the default, nx-27017's own): a commit appends page images to `<db>.db-wal`, synced
#:   only at checkpoints. A checkpoint copies them into the database file but leaves the old
#:   images in the -wal file, erased data included; after an erasure each service scrubs its
#:   database (a checkpoint and a vacuum, shared/scrub.py), which writes every page again over
#:   them. Five to fifteen times faster on writes than `truncate` (measured: 2,000 single
#:   updates 2.4 s against 12.9 s; 20 bulk writes of 100 0.55 s against 9.1 s).
#: - `truncate`: a commit writes the database file itself (synced) and empties its rollback
#:   journal, so no older copy of a page is left in any file even between scrubs; the SQLite
#:   library zeroes the space a deleted row leaves when it is built with `secure_delete` (see
#:   `sqlite_secure_delete`).
JOURNAL_MODES = {"truncate": "TRUNCATE", "wal": "WAL"}


def mongo_child(data_dir: Path, port: int, journal: str = "wal", name: str = "nx-27017") -> Child:
    """nx-27017 (MongoDB wire protocol on SQLite) with one database file per logical db, its
    SQLite journal in the given mode (`JOURNAL_MODES`). Several may share `data_dir` (one per
    service, `sarafan up`): each opens only the database files it is asked for."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pid_file = data_dir / f"{name}.pid"
    options = {
        "--data-dir": str(data_dir / "mongo"),
        "--host": LOCALHOST,
        "-p": str(port),
        "--journal-mode": JOURNAL_MODES[journal],
        # In the foreground nx-27017 writes every record both to stderr and to --log-file;
        # stderr already goes to logs/<name>.log, so one copy is enough.
        "--log-file": os.devnull,
        "--pid-file": str(pid_file),
    }
    return Child(
        name=name,
        argv=[find_executable("nx-27017"), *(part for pair in options.items() for part in pair)],
        log_path=data_dir / "logs" / f"{name}.log",
        ready_check=lambda: tcp_accepts(LOCALHOST, port) and mongo_ping(port),
        # After a SIGKILL the pid file stays; if its pid is reused nx-27017 refuses to start.
        stale_files=(pid_file,),
    )

"""Free TCP ports for the servers tests and benchmarks start, and whether a process listens on
one: picked from `SARAFAN_PORT_RANGE` when it is set, else wherever the OS binds port 0."""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from sarafan.mongo_checks import LOCALHOST

#: `low-high` (inclusive): the ports `free_port` picks from. Unset, it asks the OS (bind to port
#: 0), which hands out its ephemeral ports: the range (32768-60999 on Linux) where every outgoing
#: connection takes its local port too, so one may take a picked port before its server binds.
PORT_RANGE = "SARAFAN_PORT_RANGE"


def port_range(environ: Mapping[str, str] = os.environ) -> range | None:
    """The range `SARAFAN_PORT_RANGE` names, checked; None when it is unset or empty."""
    value = (environ.get(PORT_RANGE) or "").strip()
    if not value:
        return None
    low, dash, high = value.partition("-")
    if dash and low.strip().isdigit() and high.strip().isdigit():
        first, last = int(low), int(high)
        if 0 < first < last < 65536:
            return range(first, last + 1)
    raise ValueError(f"{PORT_RANGE}={value!r} is not two TCP ports `low-high`, low below high")


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when nothing listens on the port (SO_REUSEADDR ignores sockets in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class PortCursor:
    """Walks a range from a random place, one port further on each pick and round at its end,
    so a process does not pick a port again before it has tried every other one."""

    def __init__(
        self, ports: range, is_free: Callable[[int], bool], start: int | None = None
    ) -> None:
        self.ports = ports
        self.is_free = is_free
        self._next = random.randrange(len(ports)) if start is None else start % len(ports)
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> int:
        """The first of `count` consecutive free ports of the range (a run never wraps round)."""
        with self._lock:
            for _ in range(len(self.ports)):
                index = self._next
                self._next = (index + 1) % len(self.ports)
                if index + count > len(self.ports):
                    continue
                first = self.ports[index]
                if all(self.is_free(first + i) for i in range(count)):
                    self._next = (index + count) % len(self.ports)
                    return first
        raise OSError(f"no {count} free ports in a row in {PORT_RANGE}={self.describe()}")

    def describe(self) -> str:
        return f"{self.ports[0]}-{self.ports[-1]}"


_cursors: dict[range, PortCursor] = {}
_cursors_lock = threading.Lock()


def _cursor(ports: range) -> PortCursor:
    with _cursors_lock:
        if ports not in _cursors:
            _cursors[ports] = PortCursor(ports, port_is_free)
        return _cursors[ports]


def _os_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A TCP port nobody listens on right now (someone may bind it before the caller does):
    the next free one of `SARAFAN_PORT_RANGE`, else one the OS picks."""
    ports = port_range()
    return _os_port() if ports is None else _cursor(ports).take()


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive ports nobody listens on right now (one nx-27017 per
    service listens on a run of ports from SARAFAN_MONGO_PORT)."""
    ports = port_range()
    if ports is not None:
        return _cursor(ports).take(count)
    for _ in range(100):
        first = _os_port()
        if first + count < 65536 and all(port_is_free(first + i) for i in range(count)):
            return first
    raise OSError(f"no {count} free ports in a row")


def listening_sockets(port: int, proc: Path = Path("/proc")) -> set[int] | None:
    """The inodes of the sockets listening on TCP `port` (IPv4 and IPv6), from Linux's
    /proc/net tables; None where there are none to read (another system)."""
    found: set[int] = set()
    tables = [proc / "net" / name for name in ("tcp", "tcp6")]
    if not any(table.exists() for table in tables):
        return None
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address "ADDR:PORT" in hex, state 0A is LISTEN, inode is the tenth field.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].split(":")[-1], 16) == port:
                found.add(int(fields[9]))
    return found


def listens_on(pid: int, port: int, proc: Path = Path("/proc")) -> bool:
    """True when process `pid` holds a socket listening on `port`, or when this system cannot
    tell (no /proc): a server that answers on its port may be another one that got there
    first, while this one is still starting and about to fail to bind."""
    inodes = listening_sockets(port, proc)
    if inodes is None:
        return True
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return True
    return False

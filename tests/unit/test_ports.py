"""Free ports from `SARAFAN_PORT_RANGE` (sarafan/ports.py), the test session's slice of it
(tests/conftest.py), and whether a process holds a listening port (read from /proc)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from sarafan.ports import (
    PORT_RANGE,
    PortCursor,
    free_port,
    free_ports_in_a_row,
    listens_on,
    port_range,
)
from tests.conftest import TEST_PORTS, worker_ports

EPHEMERAL_START = 32768  # Linux's default ip_local_port_range starts here


def test_free_ports_come_from_sarafan_port_range_when_it_is_set(monkeypatch):
    monkeypatch.setenv(PORT_RANGE, "21000-21099")
    picked = [free_port() for _ in range(20)]
    assert all(21000 <= port <= 21099 for port in picked)
    assert all(a != b for a, b in itertools.pairwise(picked))
    first = free_ports_in_a_row(5)
    assert 21000 <= first and first + 4 <= 21099


def test_the_cursor_walks_its_range_skips_taken_ports_and_wraps_round():
    taken = {103}
    cursor = PortCursor(range(100, 106), lambda port: port not in taken, start=2)
    assert [cursor.take() for _ in range(7)] == [102, 104, 105, 100, 101, 102, 104]


def test_a_run_of_ports_is_free_whole_and_never_wraps_round_the_range():
    taken = {101}
    cursor = PortCursor(range(100, 110), lambda port: port not in taken, start=8)
    assert cursor.take(3) == 102  # 108-110 leaves the range, 100-102 holds a taken port
    assert cursor.take(3) == 105
    taken.update(range(100, 110))
    with pytest.raises(OSError, match="no 3 free ports in a row"):
        cursor.take(3)


@pytest.mark.parametrize("value", ["20000", "20000-", "a-b", "30000-20000", "0-10", "1-65536"])
def test_a_port_range_that_is_not_low_dash_high_is_refused(value):
    with pytest.raises(ValueError, match=PORT_RANGE):
        port_range({PORT_RANGE: value})


def test_an_unset_port_range_leaves_the_choice_to_the_os():
    assert port_range({}) is None and port_range({PORT_RANGE: " "}) is None
    assert port_range({PORT_RANGE: "20000-20009"}) == range(20000, 20010)


def test_each_test_worker_picks_below_the_ephemeral_ports_in_a_slice_of_its_own():
    slices = [port_range({PORT_RANGE: worker_ports(TEST_PORTS, f"gw{i}", "2")}) for i in (0, 1)]
    assert slices[0] and slices[1] and not set(slices[0]) & set(slices[1])
    assert max(slices[1]) < EPHEMERAL_START
    assert port_range({PORT_RANGE: worker_ports(TEST_PORTS, None, None)}) == TEST_PORTS
    # This session set its own slice before any server was started.
    session = port_range(os.environ)
    assert session is not None and set(session) <= set(TEST_PORTS)


def _fake_proc(root: Path, port: int, inode: int, pid: int, fd_inode: int) -> Path:
    (root / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue ... uid  timeout inode\n"
    rest = "00000000:00000000 00:00000000 00000000  1000        0"
    listening = f"   0: 0100007F:{port:04X} 00000000:0000 0A {rest} {inode} 1\n"
    connected = f"   1: 0100007F:{port:04X} 0100007F:9C40 01 {rest} {inode + 1} 1\n"
    (root / "net" / "tcp").write_text(header + listening + connected)
    (root / "net" / "tcp6").write_text(header)
    fds = root / str(pid) / "fd"
    fds.mkdir(parents=True)
    os.symlink("/dev/null", fds / "0")
    os.symlink(f"socket:[{fd_inode}]", fds / "3")
    return root


def test_a_process_holds_a_port_only_with_its_own_listening_socket(tmp_path):
    ours = _fake_proc(tmp_path / "ours", 20001, inode=555, pid=42, fd_inode=555)
    assert listens_on(42, 20001, proc=ours)
    assert not listens_on(42, 20002, proc=ours)  # nothing listens there
    assert not listens_on(43, 20001, proc=ours)  # no such process
    # Another process listens on the port; ours holds only a connection to it.
    theirs = _fake_proc(tmp_path / "theirs", 20001, inode=555, pid=42, fd_inode=556)
    assert not listens_on(42, 20001, proc=theirs)


def test_without_proc_a_process_is_taken_to_hold_its_port(tmp_path):
    assert listens_on(42, 20001, proc=tmp_path / "none")

"""Fault suite fixtures: the figures table at the end of the session."""

from __future__ import annotations

from typing import Any

from tests.faults.figures import FIGURES, table


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault suite figures")
    for line in table():
        terminalreporter.write_line(line)

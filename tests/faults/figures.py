"""Figures the fault tests measured, printed as a table at the end of the session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.faults.flow import Ledger


@dataclass(frozen=True)
class Figure:
    test: str
    fault: str
    accepted: int
    during_fault: int
    retries: int
    in_doubt: int
    fault_seconds: float
    converge_seconds: float
    errors: str


FIGURES: list[Figure] = []


def record(
    test: str,
    fault: str,
    ledger: Ledger,
    during_fault: int,
    fault_seconds: float,
    converge_seconds: float,
    record_property: Any = None,
) -> Figure:
    """Keep the figure for the session table, print it, and attach it to the test report."""
    errors = ", ".join(f"{k}×{v}" for k, v in sorted(ledger.errors.items())) or "-"
    figure = Figure(
        test,
        fault,
        ledger.accepted,
        during_fault,
        ledger.retries,
        len(ledger.in_doubt),
        round(fault_seconds, 2),
        round(converge_seconds, 2),
        errors,
    )
    FIGURES.append(figure)
    print(f"[faults] {figure}")
    if record_property is not None:
        for key, value in figure.__dict__.items():
            record_property(key, value)
    return figure


def table() -> list[str]:
    head = (
        f"{'fault':<34} {'accepted':>8} {'in fault':>8} {'retries':>7} {'in doubt':>8} "
        f"{'fault s':>7} {'converge s':>10}  client errors seen"
    )
    lines = [head, "-" * len(head)]
    for f in FIGURES:
        lines.append(
            f"{f.fault:<34} {f.accepted:>8} {f.during_fault:>8} {f.retries:>7} {f.in_doubt:>8} "
            f"{f.fault_seconds:>7.2f} {f.converge_seconds:>10.2f}  {f.errors}"
        )
    return lines

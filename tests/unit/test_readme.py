"""The README stays true: its event catalogue is the one generated from the models."""

from __future__ import annotations

from pathlib import Path

from sarafan.catalogue import catalogue

ROOT = Path(__file__).resolve().parents[2]


def test_readme_event_catalogue_is_generated_from_the_models():
    readme = (ROOT / "README.md").read_text()
    assert catalogue() in readme, "run: .venv/bin/python -m sarafan.catalogue README.md"


def test_readme_quickstart_has_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()

"""A service started as a process on a weak secret: it exits at once with one clear line.

(The refusal rules themselves are fast tests, tests/unit/test_weak_secrets.py; this one starts
a Python process, which is why it lives with the operator's checks.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_service_process_exits_with_one_clear_line_on_a_weak_token():
    env = {"SARAFAN_API_TOKEN": "change-me", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "services.members"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("sarafan members: refusing to start: SARAFAN_API_TOKEN is an example value")
    )
    assert "Traceback" not in done.stderr

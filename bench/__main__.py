"""`make bench`: run every benchmark in turn; each writes its section of bench/RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.stack import RESULTS, git_rev, machine

#: Module and arguments; fan-out at three sizes shows whether its cost grows linearly (the
#: target: 5,000 and 100,000 within 2x a raw insert_many; 100,000 in-app only).
BENCHMARKS = (
    ("engagement_throughput", []),
    ("fanout", ["--members", "1000"]),
    ("fanout", ["--members", "5000"]),
    ("fanout", ["--members", "10000"]),
    ("fanout", ["--members", "100000", "--no-webhook"]),
    ("joins", []),
    ("scale", []),
    ("burst", []),
    ("tracing", []),
    ("activities", []),
)


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    failed = []
    for name, arguments in BENCHMARKS:
        print(f"== bench.{name} {' '.join(arguments)}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}", *arguments], cwd=root).returncode:
            failed.append(name)
    header = f"# Benchmark results\n\nLast `make bench`: commit {git_rev()}, {machine()}.\n\n"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    body = text.split("\n## ", 1)
    RESULTS.write_text(header + ("## " + body[1] if len(body) > 1 else ""))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

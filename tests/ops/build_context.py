"""What `docker build .` would send and copy, computed without a daemon.

`.dockerignore` is read with Docker's rules (the moby patternmatcher the builders use): each
line a pattern relative to the context root, `*` and `?` within one path segment, `**` across
segments, `!` re-including; the last pattern that matches a path, or one of its parent
directories, decides. The Dockerfile's COPY instructions are parsed into (sources, destination)
so a test can replay a stage's COPY and RUN lines in a temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a `!` line: re-includes what it matches
    regex: re.Pattern[str]

    def match(self, path: str) -> bool:
        return self.regex.match(path) is not None


def _translate(pattern: str) -> str:
    """A .dockerignore pattern as an anchored regular expression."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                    out.append("(.*/)?")
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "^" + "".join(out) + "$"


def read_dockerignore(path: Path) -> list[Pattern]:
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        text = line[1:].strip() if exclusion else line
        text = os.path.normpath(text).lstrip("/")
        patterns.append(Pattern(text, exclusion, re.compile(_translate(text))))
    return patterns


def excluded(path: str, patterns: list[Pattern]) -> bool:
    """Whether Docker leaves `path` (relative, `/`-separated) out of the build context."""
    parents = path.split("/")[:-1]
    matched = False
    for pattern in patterns:
        if pattern.exclusion != matched:
            continue  # only a `!` line can change an excluded path, and the reverse
        hit = pattern.match(path) or any(
            pattern.match("/".join(parents[: i + 1])) for i in range(len(parents))
        )
        if hit:
            matched = not pattern.exclusion
    return matched


def _may_reinclude_under(directory: str, patterns: list[Pattern]) -> bool:
    """Whether a `!` pattern could re-include something below an excluded directory."""
    for pattern in patterns:
        if not pattern.exclusion:
            continue
        literal = re.split(r"[*?\[\\]", pattern.text, maxsplit=1)[0]
        if literal.startswith(directory + "/") or (directory + "/").startswith(literal):
            return True
    return False


def context_files(root: Path) -> set[str]:
    """Every file of the build context rooted at `root`, as relative `/` paths."""
    ignore = root / ".dockerignore"
    patterns = read_dockerignore(ignore) if ignore.exists() else []
    files: set[str] = set()
    for current, dirs, names in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [
            d
            for d in dirs
            if not excluded(prefix + d, patterns) or _may_reinclude_under(prefix + d, patterns)
        ]
        files |= {prefix + n for n in names if not excluded(prefix + n, patterns)}
    return files


@dataclass(frozen=True)
class Instruction:
    keyword: str  # FROM, WORKDIR, COPY, RUN, ENV, ...
    arguments: str


def stages(dockerfile: Path) -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per stage (continuations joined, comments out)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result: list[list[Instruction]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def copy_sources(instruction: Instruction) -> tuple[list[str], str] | None:
    """(sources, destination) of a COPY from the build context; None for `COPY --from=...`."""
    words = instruction.arguments.split()
    if any(w.startswith("--from=") for w in words):
        return None
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], paths[-1]


def copy_into(
    root: Path, sources: list[str], destination: str, workdir: Path, files: set[str]
) -> None:
    """Replay one COPY into `workdir`: a file source lands in the destination directory (a
    destination ending in `/`, or several sources) or as the destination; a directory's
    contents go into the destination. Only files of the build context are copied."""
    into_directory = destination.endswith("/") or len(sources) > 1
    target_root = workdir / destination
    for source in sources:
        source = source.rstrip("/")
        below = sorted(f for f in files if f == source or f.startswith(source + "/"))
        assert below, f"COPY {source}: nothing of it is in the build context"
        for path in below:
            if path == source:
                target = target_root / Path(source).name if into_directory else target_root
            else:
                target = target_root / path[len(source) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / path, target)

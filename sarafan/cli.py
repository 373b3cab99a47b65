"""The `sarafan` operator command: argument parsing and one small function per subcommand.

The tools' own subcommands are registered here with `@subcommand`; the services contribute
theirs through the `sarafan.commands` entry points (pyproject.toml), so this package needs no
import of a service to list them. An entry point named `<group>.<action>` (or `<name>`) points
at a function taking the rest of the command line and returning the exit status (or an
awaitable of it); its module's docstring gives the help line.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import inspect
import runpy
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from shared.topology import SERVICES

#: The entry-point group through which a service contributes its subcommands.
COMMANDS_GROUP = "sarafan.commands"


@dataclass(frozen=True)
class Subcommand:
    """One `sarafan <name>`: its help line, how it adds arguments, and what it runs."""

    name: str
    help: str
    handler: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


# Subcommands register here; imports stay inside handlers so `sarafan run` starts fast.
COMMANDS: dict[str, Subcommand] = {}


def subcommand(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as `sarafan <name>`; it returns the exit status."""

    def register(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
        COMMANDS[name] = Subcommand(name, help, handler, arguments)
        return handler

    return register


def _up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--servers-only",
        action="store_true",
        help="start nats-server and nx-27017 without the services (to restore a backup)",
    )


@subcommand("up", "start nats-server, nx-27017 and every service; Ctrl-C stops them", _up_arguments)
def up(args: argparse.Namespace) -> int:
    from sarafan.supervisor import run_up
    from shared.logs import configure_logging

    configure_logging("sarafan")
    return run_up(services=() if args.servers_only else SERVICES)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", choices=SERVICES, help="the service to run")


@subcommand(
    "run", "run one service in the foreground (as the container image does)", _run_arguments
)
def run(args: argparse.Namespace) -> int:
    module = f"services.{args.service}"
    sys.argv = [module]  # the service sees the argv `python -m services.<name>` would give it
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


def _check_secrets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        help="also check every file of this directory (compose mounts its secrets in "
        "/run/secrets), a URL's password in it",
    )


@subcommand(
    "check-secrets",
    "refuse example or short secrets in the environment, its *_FILE variables and --dir "
    "(compose runs it before anything)",
    _check_secrets_arguments,
)
def check_secrets(args: argparse.Namespace) -> int:
    import os

    from shared.weak_secrets import directory_refusals, environment_refusals

    refusals = environment_refusals(os.environ)
    if args.dir is not None:
        refusals += directory_refusals(args.dir)
    for refusal in refusals:
        print(f"sarafan: {refusal}", file=sys.stderr)
    return 1 if refusals else 0


def _secrets_arguments(parser: argparse.ArgumentParser) -> None:
    from sarafan import compose_secrets

    compose_secrets.arguments(parser)


@subcommand(
    "secrets",
    "write a strong random value for every secret compose reads (secrets/, one file each; "
    "existing files kept unless --force)",
    _secrets_arguments,
)
def write_secrets(args: argparse.Namespace) -> int:
    from sarafan import compose_secrets

    return compose_secrets.main(args.dir, args.force)


def _backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="where to make the backup's directory")


@subcommand(
    "backup",
    "back up every service's MongoDB database and every JetStream stream into DIR/<UTC time>/",
    _backup_arguments,
)
def backup(args: argparse.Namespace) -> int:
    from sarafan.backup import backup_command

    return _ops(lambda: backup_command(args.directory, sys.stdout))


def _restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup", type=Path, help="a directory `sarafan backup` made")
    parser.add_argument(
        "--force", action="store_true", help="replace collections and streams holding data"
    )


@subcommand(
    "restore",
    "restore a backup: MongoDB, then the streams; before starting the services",
    _restore_arguments,
)
def restore(args: argparse.Namespace) -> int:
    from sarafan.backup import restore_command

    return _ops(lambda: restore_command(args.backup, sys.stdout, args.force))


def _schemas_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="where to write the JSON Schemas")


@subcommand("schemas", "export the JSON Schema of every event type", _schemas_arguments)
def schemas(args: argparse.Namespace) -> int:
    from shared.events import export_schemas

    for path in export_schemas(args.directory):
        print(path)
    return 0


def _ops(work: Callable[..., Any]) -> int:
    """Run one operator command against the running stack; its errors become exit status 1."""
    from sarafan.ops import OpsError

    try:
        return int(asyncio.run(work()) or 0)
    except OpsError as exc:
        print(f"sarafan: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = actions.add_parser("tail", help="print events as they are published (follows)")
    tail.add_argument(
        "subject", nargs="*", help="NATS subjects to follow (default: every service's events)"
    )
    tail.add_argument("-n", "--count", type=int, help="stop after this many events")
    tail.add_argument("--raw", action="store_true", help="print each CloudEvent as JSON")


@subcommand(
    "events", "follow the events on NATS: `sarafan events tail [SUBJECT]`", _events_arguments
)
def events(args: argparse.Namespace) -> int:
    from sarafan.ops import tail
    from shared.settings import OpsConfig

    config = OpsConfig.from_env()
    return _ops(
        lambda: tail(config, args.subject, sys.stdout, sys.stderr, count=args.count, raw=args.raw)
    )


def _dlq_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="what failed, where, why and how often")
    replay = actions.add_parser(
        "replay",
        help="re-publish to the original subject, then remove the entry; refuses (and keeps) "
        "one whose subject is no event's or whose bytes are not what its stream holds",
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID", help="DLQ ids")
    which.add_argument("--all", action="store_true", help="replay every dead letter")


@subcommand(
    "dlq",
    "the dead-letter queue: `sarafan dlq list`, `sarafan dlq replay ID|--all`",
    _dlq_arguments,
)
def dlq(args: argparse.Namespace) -> int:
    from sarafan.dlq import dlq_entries, dlq_replay, dlq_table, printable
    from sarafan.ops import connect
    from shared.settings import OpsConfig

    config = OpsConfig.from_env()

    async def work() -> int:
        nc = await connect(config)
        try:
            if args.action == "list":
                print(dlq_table(await dlq_entries(nc)))
                return 0
            if not args.all and not args.ids:
                print("sarafan dlq replay: give IDs or --all", file=sys.stderr)
                return 2
            outcomes = await dlq_replay(nc, None if args.all else args.ids)
            refused = [o for o in outcomes if o.refused]
            for o in outcomes:
                if o.refused:
                    print(f"not replayed {o.id}: {printable(o.refused)}", file=sys.stderr)
                else:
                    print(f"replayed {o.id} to {o.subject}")
            summary = f"{len(outcomes) - len(refused)} dead letter(s) replayed"
            print(summary + (f", {len(refused)} refused (left in the DLQ)" if refused else ""))
            return 1 if refused else 0
        finally:
            await nc.close()

    return _ops(work)


@subcommand("stats", "community figures and each consumer's pending count")
def stats(args: argparse.Namespace) -> int:
    from sarafan.ops import stats as render_stats
    from shared.settings import OpsConfig

    config = OpsConfig.from_env()

    async def work() -> int:
        print(await render_stats(config))
        return 0

    return _ops(work)


@subcommand("demo", "play a small community against the running stack and show what happened")
def demo(args: argparse.Namespace) -> int:
    import httpx

    from sarafan.demo import run_demo
    from shared.settings import OpsConfig

    token = OpsConfig.from_env().api_token
    if not token:
        print(
            "sarafan demo: no API token (set SARAFAN_API_TOKEN or run `sarafan up` first)",
            file=sys.stderr,
        )
        return 2
    try:
        run_demo(token)
    except (httpx.HTTPError, RuntimeError) as exc:
        print(f"sarafan demo: {exc} — is the stack up (`make run`)?", file=sys.stderr)
        return 1
    return 0


# -- commands the services contribute (entry points) ---------------------------------------------


def _summary(module: str) -> str:
    """The first line of a module's docstring, read from its source without importing it, so
    that `sarafan run` does not pay for every service's command-line code."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            return ""
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def _call(entry: EntryPoint, rest: Sequence[str]) -> int:
    """Load the contributed function and run it with the rest of the command line."""
    result = entry.load()(list(rest))
    if not inspect.isawaitable(result):
        return int(result)

    async def work() -> Any:
        return await result

    return _ops(work)


def _rest(parser: argparse.ArgumentParser, prog: str) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=f"the arguments of `{prog}`")


def _contributed_command(name: str, entries: Sequence[EntryPoint]) -> Subcommand:
    """`sarafan <name> ...` for one entry point named `<name>`, or `sarafan <name> <action>
    ...` for entry points named `<name>.<action>`."""
    if len(entries) == 1 and "." not in entries[0].name:
        (entry,) = entries
        return Subcommand(
            name,
            _summary(entry.module) or f"`sarafan {name}`",
            lambda args: _call(entry, args.rest),
            lambda parser: _rest(parser, f"sarafan {name}"),
        )
    actions = {entry.name.partition(".")[2]: entry for entry in entries}

    def arguments(parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        for action, entry in actions.items():
            _rest(sub.add_parser(action, help=_summary(entry.module)), f"sarafan {name} {action}")

    summaries = [_summary(entry.module) for entry in actions.values()]
    summary = summaries[0] if len(summaries) == 1 and summaries[0] else "; ".join(actions)
    return Subcommand(name, summary, lambda args: _call(actions[args.action], args.rest), arguments)


def contributed_commands() -> dict[str, Subcommand]:
    """The services' subcommands, from the installed `sarafan.commands` entry points."""
    groups: dict[str, list[EntryPoint]] = {}
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        groups.setdefault(entry.name.partition(".")[0], []).append(entry)
    return {
        name: _contributed_command(name, entries)
        for name, entries in groups.items()
        if name not in COMMANDS  # the tools' own commands keep their names
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarafan", description="Sarafan community platform: operator commands."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in {**COMMANDS, **contributed_commands()}.values():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sarafan` console script."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

"""The `sarafan` operator command: argument parsing and one small function per subcommand."""

from __future__ import annotations

import argparse
import asyncio
import runpy
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import DEFAULT_PORTS

SERVICES = tuple(DEFAULT_PORTS)


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


@subcommand("up", "start nats-server, nx-27017 and the four services; Ctrl-C stops them")
def up(args: argparse.Namespace) -> int:
    from shared.logs import configure_logging
    from shared.supervisor import run_up

    configure_logging("sarafan")
    return run_up()


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
    from shared.ops import OpsError

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
    from shared.ops import OpsConfig, tail

    config = OpsConfig.from_env()
    return _ops(
        lambda: tail(config, args.subject, sys.stdout, sys.stderr, count=args.count, raw=args.raw)
    )


def _dlq_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="what failed, where, why and how often")
    replay = actions.add_parser(
        "replay", help="re-publish to the original subject, then remove the entry"
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
    from shared.ops import OpsConfig, connect, dlq_entries, dlq_replay, dlq_table

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
            replayed = await dlq_replay(nc, None if args.all else args.ids)
            for seq, subject in replayed:
                print(f"replayed {seq} to {subject}")
            print(f"{len(replayed)} dead letter(s) replayed")
            return 0
        finally:
            await nc.close()

    return _ops(work)


@subcommand("stats", "community figures and each consumer's pending count")
def stats(args: argparse.Namespace) -> int:
    from shared.ops import OpsConfig
    from shared.ops import stats as render_stats

    config = OpsConfig.from_env()

    async def work() -> int:
        print(await render_stats(config))
        return 0

    return _ops(work)


def _campaigns_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify-draw", help="re-run a campaign's draw and check its published winners"
    )
    verify.add_argument("rest", nargs=argparse.REMAINDER, help="CAMPAIGN_ID [--url URL]")


@subcommand(
    "campaigns", "campaign checks: `sarafan campaigns verify-draw ID`", _campaigns_arguments
)
def campaigns(args: argparse.Namespace) -> int:
    from services.campaigns.cli import verify_draw_main

    return int(verify_draw_main(list(args.rest)))


def _members_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imports = actions.add_parser(
        "import", help="import an existing volunteer base from CSV or JSON lines"
    )
    imports.add_argument(
        "rest", nargs=argparse.REMAINDER, help="FILE [--url URL] [--welcome] [--chunk N]"
    )


@subcommand("members", "members tools: `sarafan members import FILE.csv`", _members_arguments)
def members(args: argparse.Namespace) -> int:
    from services.members.cli import import_main

    return int(import_main(list(args.rest)))


def _keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        help="create --name NAME --scope SCOPE [--scope SCOPE ...] [--expires-days N] | list "
        "| revoke ID (each also takes --url URL)",
    )


@subcommand(
    "keys",
    "API keys with scopes: `sarafan keys create --name N --scope S`, `list`, `revoke ID`",
    _keys_arguments,
)
def keys(args: argparse.Namespace) -> int:
    from services.members.keys_cli import keys_command

    return _ops(lambda: keys_command(list(args.rest)))


@subcommand("demo", "play a small community against the running stack and show what happened")
def demo(args: argparse.Namespace) -> int:
    import httpx

    from shared.demo import run_demo
    from shared.ops import OpsConfig

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarafan", description="Sarafan community platform: operator commands."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
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

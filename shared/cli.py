"""The `sarafan` operator command: argument parsing and one small function per subcommand."""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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

"""`unirealm` entry point.

Each subcommand lives in its own module under `unirealm.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Usage errors and bad input exit with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMAND_MODULES = ("run", "build", "measure", "token", "platform", "initrd", "demo")


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `command` (a subcommand's name) one that registers only that
    subcommand, which parses its arguments alike without importing every other subcommand's
    modules (`unirealm run` then never loads the relying party)."""
    parser = _Parser(prog="unirealm", description="The Arm CCA realm world on one laptop.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in (command,) if command in SUBCOMMAND_MODULES else SUBCOMMAND_MODULES:
        importlib.import_module(f"unirealm.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    parser = build_parser(args_in[0] if args_in else None)
    args = parser.parse_args(args_in)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"unirealm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`unirealm ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    # Run through the package module so subcommands and this entry share one UsageError.
    from unirealm.cli.main import main as package_main

    sys.exit(package_main())

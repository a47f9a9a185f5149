"""The `rulelang` command. Each subcommand lives in `rulelang/commands/<name>.py` with `add_arguments(parser)`
and `run(args) -> int`; user errors print one clear message, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import RulelangError

#: subcommand -> one-line help
COMMANDS: dict[str, str] = {
    "check": "check rule files and print a summary line per valid file",
    "explain": "explain images with one or more rules and write a heatmap grid",
    "analyze": "analyze rules for faithfulness (static verdict, CSC, sanity checks) and write a report",
    "test": "property-test rule files on random models and print a counterexample when one fails",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rulelang", description="Modified-BP attribution rules as data.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"rulelang.commands.{name}")
        except ModuleNotFoundError as e:  # a subcommand still being built
            if e.name != f"rulelang.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except RulelangError as e:
        print(str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in rulelang, not the user's fault: still one line unless debugging
        if os.environ.get("RULELANG_DEBUG"):
            raise
        print(
            f"rulelang: internal error: {type(e).__name__}: {e} (set RULELANG_DEBUG=1 for a traceback)", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())

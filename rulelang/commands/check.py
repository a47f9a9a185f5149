"""`rulelang check FILE...`: check rule files (paths or library names; none = the whole library).

Prints one summary line per valid file, every error and warning of the others (`FILE:LINE:COL: ...`, the
source line, a caret and a hint), and exits 1 when any file has an error (warnings do not fail).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import RuleError
from ..lang import library
from ..lang.ast import RuleFile
from ..lang.loader import check_path
from ..lang.printer import format_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="rule files or library names (default: every file of the library)"
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter (repeatable), e.g. -p eps=1e-3",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors and warnings")
    parser.add_argument(
        "--theory",
        action="store_true",
        help="also print each file's static verdict without a model (nonnegative-chain, mixed, "
        "positively-homogeneous, nonlinear) under the standard assumptions: hidden-layer inputs non-negative, "
        "network input signed",
    )


def summary(rf: RuleFile, shown: str) -> str:
    """`rules/lrp-epsilon.yaml: ok  lrp-epsilon — 5 rules, params eps=1e-06`."""
    parts = [
        f"{len(rf.rules)} rule{'s' if len(rf.rules) != 1 else ''}" + (" + default" if rf.default is not None else "")
    ]
    if rf.params:
        shown_params = ", ".join(
            f"{k}=" + ("[" + ", ".join(format_number(x) for x in v) + "]" if isinstance(v, tuple) else format_number(v))  # type: ignore[arg-type]
            for k, v in rf.params
        )
        parts.append(f"params {shown_params}")
    if rf.streams != ("R",):
        parts.append(f"streams {', '.join(rf.streams)}")
    return f"{shown}: ok  {rf.name} \u2014 {', '.join(parts)}"


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise RuleError(f"bad --param `{item}`", hint="write NAME=VALUE, e.g. -p eps=1e-3")
        text = value.strip()
        out[name.strip()] = [v for v in text.strip("[]").split(",")] if text.startswith("[") else text
    return out


def _theory(rf: RuleFile) -> str:
    """The static verdict of a rule file at synthetic nodes (rulelang/analysis/synthetic.py), indented."""
    from ..analysis.synthetic import theory

    return "\n".join("  " + line for line in f"theory: {theory(rf)}".splitlines())


def run(args: argparse.Namespace) -> int:
    params = _params(args.param)
    files = args.files or [str(p) for p in library.rule_files()]
    if not files:
        print("rulelang check: no rule files given and the library is empty", file=sys.stderr)
        return 1
    failed = False
    for f in files:
        rf, problems = check_path(f, **params)
        for p in problems:
            print(p.format(), file=sys.stderr)
        if rf is None:
            failed = True
        elif not args.quiet:
            print(summary(rf, f))
        if rf is not None and getattr(args, "theory", False):
            print(_theory(rf))
    return 1 if failed else 0

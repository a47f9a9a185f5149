"""`rulelang test FILE_OR_NAME... [--examples N] [--seconds S] [--seed K] [--property NAME...]`: property-test
rule files on random models (`rulelang.testing`).

Prints one line per property (passed with the number of examples, not applicable and why, FAILED with a
minimal counterexample as runnable Python) and exits 0 when every property holds, 1 when one fails, 2 for a
bad file or bad usage (the checker's located errors, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..lang import library
from ..lang.loader import check_path

#: the properties, for --help (kept in sync with rulelang.testing.runner.PROPERTIES by a test)
PROPERTY_NAMES = (
    "finite",
    "shape",
    "batch_independent",
    "precision",
    "deterministic",
    "conserves",
    "agrees",
    "linear_in_R",
    "sound",
    "unmutated",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="*", metavar="FILE_OR_NAME", help="rule files or library names (default: the whole library)"
    )
    parser.add_argument(
        "--profile",
        choices=("ci", "dev"),
        default=None,
        help="examples per property: ci = 10, dev = 100 (default: $HYPOTHESIS_PROFILE if ci/dev, else dev)",
    )
    parser.add_argument("--examples", type=int, metavar="N", help="examples per property (overrides --profile)")
    parser.add_argument("--seconds", type=float, metavar="S", help="time cap per file (new examples stop)")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="hypothesis seed (default 0)")
    parser.add_argument(
        "--property",
        dest="properties",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="run only these properties (repeatable): " + ", ".join(PROPERTY_NAMES),
    )
    parser.add_argument(
        "--linear",
        action="store_true",
        help="check linear_in_R on every example (the rule is meant to be linear in R), not only where the "
        "static analysis says so",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only failures and a summary")


def _usage(message: str) -> int:
    print(f"rulelang test: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from ..testing.runner import PROPERTIES, check

    if args.examples is not None and args.examples < 1:
        return _usage("--examples must be at least 1")
    if args.seconds is not None and args.seconds <= 0:
        return _usage("--seconds must be positive")
    unknown = [p for p in args.properties or [] if p not in PROPERTIES]
    if unknown:
        return _usage(f"unknown property `{unknown[0]}` (properties: {', '.join(PROPERTIES)})")
    env = os.environ.get("HYPOTHESIS_PROFILE", "")
    profile: str = args.profile or (env if env in ("ci", "dev") else "dev")
    files = args.files or [name for name in library.list_rules()]
    bad = False
    checked = []
    for f in files:
        rf, problems = check_path(f)
        for p in problems:
            if p.severity == "error":
                print(p.format(), file=sys.stderr)
        if rf is None:
            bad = True
        else:
            checked.append(f)
    if bad:
        return 2
    failed = 0
    for f in checked:
        print(f"{f}:")
        results = check(
            f,
            args.properties,
            profile=profile,
            examples=args.examples,
            seconds=args.seconds,
            seed=args.seed,
            assume_linear=args.linear,
        )
        for r in results:
            if r.status == "failed":
                failed += 1
                print(f"  {r.line()}")
                print("\n".join(r.reason.splitlines()[1:]))
                if r.counterexample:
                    print("# ---- minimal counterexample (runnable Python) ----")
                    print(r.counterexample + "# ---- end of counterexample ----")
            elif not args.quiet:
                print(f"  {r.line()}")
    n = len(checked)
    print(
        f"{n} file{'s' if n != 1 else ''}: "
        + (f"{failed} propert{'ies' if failed != 1 else 'y'} failed" if failed else "all properties hold")
    )
    return 1 if failed else 0

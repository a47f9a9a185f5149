"""Time of `rulelang test` (every property, CI profile) over the whole rule library, per file and in total.

    python benchmarks/rule_tests_time.py [--profile ci] [--rules a,b] [--conservation]

Prints one JSON object: wall and CPU seconds per file and in total (the machine may be shared: the CPU time is
what an idle core would take), each file's property outcomes, and with
`--conservation` also whether every library rule conserves relevance on bias-free models (the `conserves`
property forced on, whether or not the file declares it) - how the library's `conserves: true` were decided.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", choices=("ci", "dev"))
    parser.add_argument("--rules", default=None, help="comma-separated names (default: the whole library)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conservation", action="store_true", help="also force `conserves` on every rule")
    args = parser.parse_args()

    import torch

    from rulelang.lang import library
    from rulelang.testing import runner

    torch.set_num_threads(1)
    names = args.rules.split(",") if args.rules else library.list_rules()
    start, cpu_start = time.perf_counter(), time.process_time()
    files: dict[str, dict] = {}
    for name in names:
        t, c = time.perf_counter(), time.process_time()
        results = runner.check(name, profile=args.profile, seed=args.seed)
        files[name] = {
            "seconds": round(time.perf_counter() - t, 2),
            "cpu_seconds": round(time.process_time() - c, 2),
            "results": {r.prop: r.status + (f" ({r.examples})" if r.status == "passed" else "") for r in results},
            "failures": {r.prop: r.reason for r in results if r.status == "failed"},
        }
        print(name, files[name]["seconds"], files[name]["cpu_seconds"], file=sys.stderr, flush=True)
    total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
    out: dict = {
        "what": f"rulelang test, profile {args.profile}, seed {args.seed}, whole library"
        if not args.rules
        else "subset",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "total_seconds": round(total, 1),
        "total_cpu_seconds": round(cpu_total, 1),  # this process's CPU time: wall time on an unshared core
        "load_average": os.getloadavg()[0],
        "files": files,
    }
    if args.conservation:
        forced = dataclasses.replace(runner.PROPERTIES["conserves"], applies=lambda rf, ref: None)
        out["conservation_on_bias_free_models"] = {}
        for name in names:
            r = runner.check_property(name, forced, profile=args.profile, seed_=args.seed)
            out["conservation_on_bias_free_models"][name] = r.status + (": " + r.reason if r.reason else "")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Time of the static analysis (`rulelang.analysis.static`) of every library rule on torchvision resnet50
(random weights), printed as JSON: per rule the verdict, the seconds of `static()` (median of `--repeat` runs,
after one warm-up) and the compile time for reference.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/static_time.py [--model resnet50] [--size 224] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import rulelang
from rulelang.analysis import static
from rulelang.lang import library


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = rulelang.builtin_model(args.model)
    x = torch.randn(1, 3, args.size, args.size)
    rows = {}
    for path in library.rule_files():
        if path.stem.startswith("_"):
            continue
        t0 = time.perf_counter()
        ex = rulelang.compile(model, path.stem, example_input=x, check=False)
        compile_s = time.perf_counter() - t0
        res = static(ex)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = static(ex)
            times.append(time.perf_counter() - t0)
        rows[path.stem] = {
            "verdict": res.verdict,
            "first_break": res.first_break,
            "static_s": round(statistics.median(times), 4),
            "compile_s": round(compile_s, 3),
        }
    out = {
        "model": args.model,
        "nodes": len(ex.nodes),
        "input": list(x.shape),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "max_static_s": max(r["static_s"] for r in rows.values()),
        "rules": rows,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

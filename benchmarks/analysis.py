"""Timings of the measured analyses on the trained digits-cnn (CPU), and the per-rule faithfulness table.

    python benchmarks/analysis.py                       # timings: CSC (50 images), theory, both sanity checks (50)
    python benchmarks/analysis.py --rule lrp-alpha2-beta1 --threads 2
    python benchmarks/analysis.py --table               # every library rule: CSC, chain σ2/σ1, sanity SSIMs
    python benchmarks/analysis.py --table --rules gradient,lrp-zplus --images 20

Targets on this 2-core CPU (issue 9): CSC of one rule with 50 images ≤ 10 s, theory ≤ 10 s, both sanity checks with
50 images ≤ 20 s. Each timing is the wall time of one call after compiling (compile time is reported separately).
`--table` prints, per rule: the CSC median at the lowest layer (features_0, 16 channels) and its baseline, the
whole-map CSC at the input, σ2/σ1 and median column |cos| of the accumulated product at the input (one image),
whether the measured linear-layer maps are non-negative, the random-logit SSIM and the SSIM after the top layer
(classifier.5) is randomized (median over the images). Pattern rules are fitted first on the training split.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

TARGETS = {"csc": 10.0, "theory": 10.0, "sanity": 20.0}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _explainer(model: Any, rule: str, x: Any, fitted_dir: str) -> tuple[Any, dict[str, Any]]:
    """(explainer, compile kwargs for `randomization`); pattern rules are fitted on the training split."""
    import rulelang

    ex = rulelang.compile(model, rule, example_input=x[:1])
    if ex.rules.fit:
        xtr, _ = rulelang.builtin_data("digits-rgb", split="train")
        rulelang.fit(ex, [xtr[i : i + 256] for i in range(0, len(xtr), 256)], progress=False)
        path = os.path.join(fitted_dir, f"{rule}.pt")
        ex.save_fitted(path)
        return ex, {"fitted": path}
    return ex, {}


class _Clock:
    """Wall and process-CPU seconds of a block (CPU time shows what other processes' load costs the wall time)."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = round(time.perf_counter() - self.wall, 3)
        self.cpu = round(time.process_time() - self.cpu, 3)


def timings(rule: str, images: int) -> dict[str, Any]:
    import torch

    import rulelang
    from rulelang.analysis import csc, random_logit, randomization, theory

    model = rulelang.builtin_model("digits-cnn")
    x, y = rulelang.builtin_data("digits-rgb", split="test")
    x, y = x[:images], y[:images]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with _Clock() as c:
            ex, kwargs = _explainer(model, rule, x, tmp)
            ex(x[:1])  # first call builds the explain graph
        out["compile_seconds"], out["compile_cpu_seconds"] = c.wall, c.cpu
        with _Clock() as c:
            res = csc(ex, x)
        out["csc_seconds"], out["csc_cpu_seconds"] = c.wall, c.cpu
        out["csc_input_median"] = res.readout("input").median
        with _Clock() as c:
            th = theory(ex, x[:1])
        out["theory_seconds"], out["theory_cpu_seconds"] = c.wall, c.cpu
        out["theory_gradient_compared"] = th.gradient is not None
        with _Clock() as c:
            random_logit(ex, x, y)
        out["random_logit_seconds"], out["random_logit_cpu_seconds"] = c.wall, c.cpu
        with _Clock() as c:
            randomization(model, rule, x, y, **kwargs)
        out["randomization_seconds"], out["randomization_cpu_seconds"] = c.wall, c.cpu
    out["sanity_seconds"] = round(out["random_logit_seconds"] + out["randomization_seconds"], 3)
    out["sanity_cpu_seconds"] = round(out["random_logit_cpu_seconds"] + out["randomization_cpu_seconds"], 3)
    out["within_target"] = {
        "csc": out["csc_seconds"] <= TARGETS["csc"],
        "theory": out["theory_seconds"] <= TARGETS["theory"],
        "sanity": out["sanity_seconds"] <= TARGETS["sanity"],
    }
    out["torch_threads"] = torch.get_num_threads()
    out["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return out


def library_rules() -> list[str]:
    files = glob.glob(os.path.join(ROOT, "rules", "*.yaml"))
    return sorted(os.path.basename(f)[:-5] for f in files if not os.path.basename(f).startswith("_"))


def table(rules: list[str], images: int) -> dict[str, Any]:
    import rulelang
    from rulelang.analysis import csc, random_logit, randomization, theory

    model = rulelang.builtin_model("digits-cnn")
    x, y = rulelang.builtin_data("digits-rgb", split="test")
    x, y = x[:images], y[:images]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rule in rules:
            t = time.perf_counter()
            try:
                ex, kwargs = _explainer(model, rule, x, tmp)
                res = csc(ex, x)
                low, inp = res.lowest(), res.readout("input")
                th = theory(ex, x[:1], kinds=("linear",), compare_gradient=False)
                chain = th.chain_at("input")
                rl = random_logit(ex, x, y).to_dict()
                top = randomization(model, rule, x, y, layers=["classifier.5"], **kwargs).to_dict()["steps"][0]
                rows[rule] = {
                    "csc_lowest_node": low.node,
                    "csc_lowest_median": low.median,
                    "csc_lowest_baseline": low.baseline,
                    "csc_input_median": inp.median,
                    "csc_input_whole_map": inp.whole_map,
                    "input_baseline": inp.baseline,
                    "chain_sigma_ratio_input": chain.sigma_ratio,
                    "chain_median_cos_input": chain.median_cos,
                    "linear": th.linear,
                    "maps_nonnegative": th.nonnegative,
                    "random_logit_ssim": rl["ssim_median"],
                    "random_logit_ssim_interval": rl["ssim_interval"],
                    "top_randomized_ssim": top["ssim_median"],
                    "top_randomized_ssim_interval": top["ssim_interval"],
                    "seconds": round(time.perf_counter() - t, 2),
                }
            except Exception as e:  # a row that fails is reported, not hidden
                rows[rule] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{rule}: {rows[rule]}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rule", default="lrp-zplus", help="rule for the timings")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="the per-rule table instead of the timings")
    ap.add_argument("--rules", default=None, help="comma-separated rules for --table (default: the library)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    info = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine()}
    if args.table:
        rules = args.rules.split(",") if args.rules else library_rules()
        out = {"model": "digits-cnn", "images": args.images, **info, "rules": table(rules, args.images)}
    else:
        out = {"model": "digits-cnn", "rule": args.rule, "images": args.images, "targets": TARGETS, **info}
        out.update(timings(args.rule, args.images))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

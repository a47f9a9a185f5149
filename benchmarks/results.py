"""Runs the issue-15 CPU benchmark set with speed.py and compile_time.py and writes benchmarks/RESULTS.md.

    OMP_NUM_THREADS=1 python benchmarks/results.py                 # all configurations (~30-60 min, loaded CPU)
    python benchmarks/results.py --configs resnet50:1 --repeat 3   # one configuration
    python benchmarks/results.py --from-json                       # only re-render RESULTS.md from saved JSON

benchmarks/results/NOTES.md (hand-written: before/after numbers, floors) is appended to RESULTS.md as is.

Each configuration (model:batch, 64x64, float32, one thread, default settings) is one `speed.py` run in a
subprocess; its JSON is saved under benchmarks/results/. Peak memory (one child process per method, see speed.py)
is measured for batch-8 configurations only (it is the slow part). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
RULES = [
    "gradient",
    "lrp-epsilon",
    "lrp-zplus",
    "excitation-bp",
    "lrp-epsilon-plus",
    "lrp-epsilon-alpha2-beta1",
    "guided-backprop",
    "deeplift-rescale",
]
#: the issue's targets (ratio to the gradient, CPU)
TARGETS = {
    "gradient": 1.05,
    "lrp-epsilon": 1.1,
    "lrp-zplus": 1.5,
    "excitation-bp": 1.5,
    "lrp-epsilon-plus": 1.35,
    "lrp-epsilon-alpha2-beta1": 2.2,
    "guided-backprop": 1.05,
    "deeplift-rescale": 1.5,
}
CONFIGS = ["vgg16:1", "vgg16:8", "resnet50:1", "resnet50:8"]


def run_config(model: str, batch: int, repeat: int, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "speed.py"), "--model", model, "--batch", str(batch), "--size", "64"]
    cmd += ["--threads", "1", "--repeat", str(repeat), "--rules", ",".join(RULES)] + extra
    if batch < 8:
        cmd.append("--no-memory")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return {**json.loads(out), "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}


def run_compile_time() -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "compile_time.py"), "--models", "resnet50,densenet121"]
    cmd += ["--rules", "gradient,lrp-epsilon,lrp-zplus"]
    out = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _fmt(v: Any, suffix: str = "×") -> str:
    return "—" if v is None else f"{v:.2f}{suffix}"


def _load_text(reports: dict[str, dict[str, Any]]) -> str:
    """The 1-minute load averages recorded before and after each configuration's run."""
    loads = [v for rep in reports.values() for v in rep.get("load_average", [])]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "not recorded"


def render(reports: dict[str, dict[str, Any]], compile_report: dict[str, Any] | None) -> str:
    lines = [
        "# Benchmark results (CPU)",
        "",
        "Produced by `OMP_NUM_THREADS=1 python benchmarks/results.py` (raw JSON in `benchmarks/results/`).",
        "torchvision models with seeded random weights, 64×64 inputs, float32, one thread, default settings",
        "(`rulelang.compile(model, rule, example_input=x)`: the parameter cache is on). Ratios are median seconds",
        "per call over the plain input gradient's (forward + `torch.autograd.grad`), measured interleaved in one",
        "process; zennit/captum columns are the same ratio for their counterpart (— where there is none). The",
        f"machine is a shared 2-core VM (1-minute load average during these runs: {_load_text(reports)}; at 8–14,",
        "single ratios moved by ±10–30 % between runs); a ratio below the rule's convolution-count floor (see the",
        "notes) is noise.",
        "✓/✗ compare the median with the issue's target as measured, noise included.",
        "",
    ]
    for rep in reports.values():
        cfg = rep["config"]
        methods = rep["methods"]
        g = methods.get("gradient", {})
        lines += [
            f"## {cfg['model']}, batch {cfg['batch']}",
            "",
            f"gradient: {g.get('seconds', float('nan')) * 1e3:.1f} ms per call"
            + (f", peak {g['peak_above_start_mib']:.0f} MiB above the model" if g.get("peak_above_start_mib") else ""),
            "",
            "| rule | target | rulelang | zennit | captum | rulelang vs zennit | memory / gradient | cache MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for rule in RULES:
            r = methods.get(f"rulelang/{rule}", {})
            z = methods.get(f"zennit/{rule}", {})
            c = methods.get(f"captum/{rule}", {})
            ratio = r.get("ratio_to_gradient")
            target = TARGETS.get(rule)
            ok = "" if ratio is None or target is None else (" ✓" if ratio <= target else " ✗")
            speedup = f"{z['seconds'] / r['seconds']:.2f}× faster" if r.get("seconds") and z.get("seconds") else "—"
            err = f" ({r['error'][:60]})" if r.get("error") else ""
            lines.append(
                f"| {rule} | ≤ {target}× | {_fmt(ratio)}{ok}{err} | {_fmt(z.get('ratio_to_gradient'))} | "
                f"{_fmt(c.get('ratio_to_gradient'))} | {speedup} | {_fmt(r.get('memory_ratio_to_gradient'))} | "
                f"{r.get('cache_mib', '—')} |"
            )
        lines.append("")
    notes = OUT / "NOTES.md"  # hand-written analysis (before/after, floors), kept across re-runs
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    if compile_report is not None:
        lines += ["## Compile time", "", "```json", json.dumps(compile_report, indent=1)[:4000], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help="model:batch,... (default all four)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--no-compile-time", action="store_true")
    p.add_argument("--from-json", action="store_true", help="re-render RESULTS.md from benchmarks/results/*.json")
    args = p.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    reports: dict[str, dict[str, Any]] = {}
    for cfg in args.configs.split(","):
        model, batch = cfg.split(":")
        path = OUT / f"{model}_b{batch}.json"
        if not args.from_json:
            rep = run_config(model, int(batch), args.repeat, ["--no-peers"] if args.no_peers else [])
            path.write_text(json.dumps(rep, indent=1))
            print(f"{cfg}: done", file=sys.stderr)
        if path.exists():
            reports[cfg] = json.loads(path.read_text())
    ct_path = OUT / "compile_time.json"
    if not args.from_json and not args.no_compile_time:
        ct_path.write_text(json.dumps(run_compile_time(), indent=1))
    compile_report = json.loads(ct_path.read_text()) if ct_path.exists() else None
    (HERE / "RESULTS.md").write_text(render(reports, compile_report))
    print(str(HERE / "RESULTS.md"))


if __name__ == "__main__":
    main()

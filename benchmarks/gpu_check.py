"""One GPU session's worth of checks: correctness of CUDA explanations and speed against zennit and captum.

    python benchmarks/gpu_check.py                  # on a machine with CUDA (about 2-4 minutes on an H100)
    python benchmarks/gpu_check.py --cpu-dry-run    # the same code path on the CPU at tiny sizes (test it here)

1. correctness: torchvision vgg16 and resnet50 (seeded random weights, random biases and BN statistics), batch 4,
   224x224, rules gradient / lrp-epsilon / lrp-zplus, compiled and run on CUDA in float32, each compared with
   the CPU float64 result of the same model, input and target (worst per-sample cosine and relative L2 error).
   TF32 is switched off for this part (cuDNN convolutions use TF32 by default, ~1e-3 relative error).
   `gradient` on CUDA is also compared with torch.autograd on CUDA.
2. speed: benchmarks/speed.py's measurement on CUDA, vgg16 and resnet50 at batch 32, 224x224, float32 (torch's
   default TF32 settings, recorded), rulelang vs the plain gradient, zennit and captum, with peak memory.

Prints one JSON report; exit status 1 if a correctness check fails (never for speed).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from speed import run_speed  # noqa: E402

MODELS = ["vgg16", "resnet50"]
CHECK_RULES = ["gradient", "lrp-epsilon", "lrp-zplus"]
SPEED_RULES = ["gradient", "lrp-epsilon", "lrp-zplus", "lrp-alpha2-beta1", "lrp-epsilon-plus-flat", "guided-backprop"]
# (worst cosine above, worst relative error below): float32 device vs float64 CPU
TOLERANCE = {
    "gradient": (0.99999, 1e-3),
    "lrp-epsilon": (0.999, 1e-2),
    "lrp-zplus": (0.99999, 1e-3),
    "autograd": (0.99999, 1e-4),
}


def _verdict(metrics: dict[str, float], key: str) -> dict[str, Any]:
    cos, rel = TOLERANCE[key]
    ok = metrics["cos"] > cos and metrics["rel"] < rel
    return {**metrics, "pass": bool(ok), "tolerance": {"cos_above": cos, "rel_below": rel}}


def correctness(name: str, device: torch.device, batch: int, size: int) -> dict[str, Any]:
    import rulelang

    base = C.build_model(name, seed=0)
    shape = C.input_shape(name, size)
    x64 = C.images(batch, shape, seed=0).double()
    m64 = copy.deepcopy(base).double()
    with torch.no_grad():
        target = m64(x64).argmax(1)
    mdev = copy.deepcopy(base).to(device, torch.float32)
    xdev, tdev = x64.to(device, torch.float32), target.to(device)
    out: dict[str, Any] = {"batch": batch, "input_shape": list(shape), "targets": target.tolist(), "rules": {}}
    for rule in CHECK_RULES:
        row: dict[str, Any] = {}
        try:
            t = time.perf_counter()
            ref = rulelang.compile(m64, rule, example_input=x64)(x64, target=target)
            row["cpu_float64_seconds"] = round(time.perf_counter() - t, 3)
            C.sync(device)
            t = time.perf_counter()
            explainer = rulelang.compile(mdev, rule, example_input=xdev)
            row["device_compile_seconds"] = round(time.perf_counter() - t, 3)
            got = explainer(xdev, target=tdev)
            C.sync(device)
            row["device_dtype"] = str(got.dtype).replace("torch.", "")
            row["finite"] = bool(torch.isfinite(got).all())
            row["vs_cpu_float64"] = _verdict(C.compare(got, ref), rule)
            row["vs_cpu_float64"]["pass"] &= row["finite"]
            if rule == "gradient":
                auto = C.gradient_fn(mdev, xdev, tdev)()
                row["vs_autograd_on_device"] = _verdict(C.compare(got, auto), "autograd")
            del ref, got, explainer
        except Exception as e:  # noqa: BLE001 - report it, go on with the next rule
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            row["traceback"] = traceback.format_exc().splitlines()[-6:]
        out["rules"][rule] = row
    del m64, mdev, base
    return out


def _failures(report: dict[str, Any]) -> list[str]:
    bad = []
    for model, res in report["correctness"].items():
        if "error" in res:
            bad.append(f"{model}: {res['error']}")
            continue
        for rule, row in res["rules"].items():
            if "error" in row:
                bad.append(f"{model}/{rule}: {row['error']}")
            for k in ("vs_cpu_float64", "vs_autograd_on_device"):
                if k in row and not row[k]["pass"]:
                    bad.append(f"{model}/{rule} {k}: cos {row[k]['cos']:.6f}, rel {row[k]['rel']:.2e}")
    return bad


def _summary(speed: dict[str, Any]) -> dict[str, Any]:
    """ratio_to_gradient per rule and system, per model: the table DESIGN §8 talks about."""
    table: dict[str, Any] = {}
    for model, rep in speed.items():
        if "methods" not in rep:
            continue
        rows: dict[str, Any] = {}
        for key, row in rep["methods"].items():
            if key == "gradient":
                rows["gradient_ms"] = round(row["seconds"] * 1e3, 2) if "seconds" in row else None
                continue
            system, rule = key.split("/", 1)
            cell = rows.setdefault(rule, {"design_target": C.DESIGN_TARGETS.get(rule)})
            cell[system] = row.get("ratio_to_gradient") if "error" not in row else "error"
            if "memory_ratio_to_gradient" in row:
                cell[f"{system}_memory"] = row["memory_ratio_to_gradient"]
        table[model] = rows
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="CPU, 32x32, batch 2, repeat 1: test the code path")
    p.add_argument("--repeat", type=int, default=None, help="timed calls per method (default 10; dry run 1)")
    p.add_argument("--speed-batch", type=int, default=None, help="default 32 (dry run 2)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-correctness", action="store_true")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.cpu_dry_run:
        device, size, batch = torch.device("cpu"), 32, 2
        speed_batch, repeat, warmup = args.speed_batch or 2, args.repeat or 1, 1
    else:
        if not torch.cuda.is_available():
            print(json.dumps({"error": "no CUDA device (use --cpu-dry-run to test the code path)"}))
            return 2
        device, size, batch = torch.device("cuda"), 224, 4
        speed_batch, repeat, warmup = args.speed_batch or 32, args.repeat or 10, 3
    report: dict[str, Any] = {
        "mode": "cpu-dry-run" if args.cpu_dry_run else "cuda",
        "environment": C.environment(device),
        "correctness": {},
        "speed": {},
    }

    if not args.skip_correctness:
        tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            for name in MODELS:
                t = time.perf_counter()
                try:
                    report["correctness"][name] = correctness(name, device, batch, size)
                except Exception as e:  # noqa: BLE001
                    report["correctness"][name] = {"error": f"{type(e).__name__}: {e}"[:500]}
                report["correctness"][name]["seconds"] = round(time.perf_counter() - t, 2)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        report["correctness_settings"] = {"tf32": False, "device_dtype": "float32", "reference": "cpu float64"}

    if not args.skip_speed:
        for name in MODELS:
            t = time.perf_counter()
            try:
                report["speed"][name] = run_speed(
                    name,
                    speed_batch,
                    size,
                    str(device),
                    "float32",
                    SPEED_RULES,
                    repeat=repeat,
                    warmup=warmup,
                    peers=True,
                    memory=True,
                )
            except Exception as e:  # noqa: BLE001
                report["speed"][name] = {
                    "error": f"{type(e).__name__}: {e}"[:500],
                    "traceback": traceback.format_exc().splitlines()[-6:],
                }
            report["speed"][name]["seconds_total"] = round(time.perf_counter() - t, 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        report["speed_summary_ratio_to_gradient"] = _summary(report["speed"])

    failures = _failures(report) if report["correctness"] else []
    report["correctness_failures"] = failures
    report["ok"] = not failures
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(report, indent=1, default=str))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

"""The paper's CSC protocol (research/paper.md §3.1) on torchvision VGG-16 and ResNet-50, for a session with a GPU.

    python benchmarks/gpu_analysis.py --dry-run                  # tiny sizes on CPU: checks the script end to end
    python benchmarks/gpu_analysis.py --device cuda              # 200 inputs of 224², 5 probes, every library rule
    python benchmarks/gpu_analysis.py --device cuda --models vgg16 --rules gradient,lrp-zplus --images 50

Models have seeded random weights (torchvision's initialisation plus random biases and BatchNorm statistics,
`rulelang.testing.models.randomize_`; nothing is downloaded); inputs are seeded N(0, 1) tensors (like normalised
images). Injection at the logits and at four intermediate layers, post-ReLU as the paper's Keras layers:
VGG-16 fc1, conv4_3, conv3_3, conv2_2 (`classifier.1`, `features.22`, `features.15`, `features.8`); ResNet-50
block5_1, block4_2, block3_4, block3_2 (the outputs of `layer4.0`, `layer3.1`, `layer2.3`, `layer2.1`). Rules
with `lo`/`hi` parameters (DTD, z^B) get the inputs' min/max (the paper: the exemplary image's). Pattern rules are
fitted first on separate seeded inputs. Per (model, rule): seconds, and per injection the median |cos| at every
readout with its baseline and the whole-map |cos|. Results are written after every rule to `--out` (default
`$OUT/gpu_analysis.json` when $OUT is set), so a run cut short keeps what it finished; the final JSON also goes to
stdout.

Random weights are fine for the non-negative rules and for the gradient/DeepLIFT, not for lrp-z and ε with a small
ε: a few pre-activations are ~1e-6 (VGG-16's logits: median |z| 0.04, minimum 1e-6), the z-division lets those
units dominate every probe, and the probes align (|cos| ≈ 0.99 at the input) — a numerical degeneracy, not a rank-1
collapse (tests/analysis/test_csc_depth.py). Read those rows with that in mind.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INJECTIONS = {
    "vgg16": ["output", "classifier.1", "features.22", "features.15", "features.8"],
    "resnet50": ["output", "layer4.0", "layer3.1", "layer2.3", "layer2.1"],
}
DRY_RULES = ["gradient", "lrp-zplus", "dtd-bounded", "deeplift-reveal-cancel", "pattern-attribution"]


def library_rules() -> list[str]:
    files = glob.glob(os.path.join(ROOT, "rules", "*.yaml"))
    return sorted(os.path.basename(f)[:-5] for f in files if not os.path.basename(f).startswith("_"))


def injection_node(explainer: Any, name: str) -> str:
    """A node name for `name`: "output", a node/module name, or a block's module path (its last op)."""
    if name == "output":
        return name
    try:
        return explainer.graph.op(name).name
    except KeyError:
        pass
    prefix = name + "."
    ops = [o for o in explainer.graph.ops if (o.module or "").startswith(prefix)]
    if not ops:
        raise SystemExit(f"no node or block {name!r} in the model")
    return ops[-1].name


def inputs(n: int, size: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def run_rule(model: Any, rule: str, x: Any, args: Any, device: Any) -> dict[str, Any]:
    import torch

    import rulelang
    from rulelang.analysis import csc

    loaded = rulelang.load(rule)
    params = {}
    names = {k for k, _ in loaded.params}
    if {"lo", "hi"} <= names:
        params = {"lo": float(x.min()), "hi": float(x.max())}
    t = time.perf_counter()
    ex = rulelang.compile(model, rule, example_input=x[:1].to(device), **params)
    if ex.rules.fit:
        fit_x = inputs(args.fit_images, args.size, args.seed + 1)
        batches = [fit_x[i : i + args.batch_size].to(device) for i in range(0, len(fit_x), args.batch_size)]
        rulelang.fit(ex, batches, progress=sys.stderr.isatty())
    setup = time.perf_counter() - t
    at = [injection_node(ex, a) for a in INJECTIONS[args.model_name]]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = csc(ex, x, at=at, probes=args.probes, seed=args.seed, batch_size=args.batch_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    out: dict[str, Any] = {"setup_seconds": round(setup, 2), "csc_seconds": round(seconds, 2)}
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["injections"] = {
        inj: [
            {
                "node": r.node,
                "channels": r.channels,
                "median": r.median,
                "baseline": r.baseline,
                "whole_map": r.whole_map,
                "exact": r.exact,
            }
            for r in rows
        ]
        for inj, rows in res.injections.items()
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16,resnet50")
    ap.add_argument("--rules", default=None, help="comma-separated (default: every library rule)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8, help="images per propagate call")
    ap.add_argument("--fit-images", type=int, default=64, help="inputs for fitting pattern rules")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU (2 images of 32², a few rules)")
    args = ap.parse_args()
    import torch
    from _common import build_model

    if args.dry_run:
        args.device, args.images, args.size, args.batch_size, args.fit_images = "cpu", 2, 32, 2, 4
        args.rules = args.rules or ",".join(DRY_RULES)
    device = torch.device(args.device)
    rules = args.rules.split(",") if args.rules else library_rules()
    path = args.out or (os.path.join(os.environ["OUT"], "gpu_analysis.json") if os.environ.get("OUT") else None)
    result: dict[str, Any] = {
        "protocol": "paper.md §3.1",
        "images": args.images,
        "size": args.size,
        "probes": args.probes,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "models": {},
    }
    t_all = time.perf_counter()
    x = inputs(args.images, args.size, args.seed)
    for name in args.models.split(","):
        args.model_name = name
        model = build_model(name, seed=args.seed).to(device)
        result["models"][name] = {}
        for rule in rules:
            try:
                row = run_rule(model, rule, x, args, device)
            except Exception as e:  # reported per rule, the run goes on
                row = {"error": f"{type(e).__name__}: {e}"}
            result["models"][name][rule] = row
            summary = {k: v for k, v in row.items() if k != "injections"}
            if "injections" in row:
                logit = row["injections"]["output"]
                summary["input_median"] = round(logit[-1]["median"], 6)
                summary["input_whole_map"] = round(logit[-1]["whole_map"], 6)
            print(f"{name} {rule}: {summary}", file=sys.stderr, flush=True)
            result["total_seconds"] = round(time.perf_counter() - t_all, 1)
            if path:
                with open(path, "w") as f:
                    json.dump(result, f, indent=1)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

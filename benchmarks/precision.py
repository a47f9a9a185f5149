"""bfloat16, float16, channels_last and CPU autocast against float32: the error of every library rule's attribution.
Prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/precision.py                   # vgg16, resnet50 (64x64), digits-cnn
    OMP_NUM_THREADS=1 python benchmarks/precision.py --quick           # digits-cnn only

Per model, rule and variant: `ran` (or `error`: the RulelangError's class and message), and against the same rule
in float32 on the same inputs: `rel_l2` (worst per-sample ||a - a32|| / ||a32||), `cos` (worst per-sample cosine),
`top1pct_overlap` (mean and min over samples of the share of the top-1 % pixels, by |attribution summed over
channels|, that the variant and float32 have in common), `dtype` of the result.
Variants: `bfloat16` / `float16` (model and input cast), `channels_last` (float32, model and input in channels_last
memory format), `autocast_bfloat16` (float32 model under ``torch.autocast("cpu", bfloat16)``).
`gradient_baseline`: the same numbers for the plain autograd input gradient (forward + torch.autograd.grad) in
each precision: the error the precision itself brings to one forward and backward pass.
Models: torchvision vgg16/resnet50 with seeded random weights, random biases and BN statistics, random signed inputs;
digits-cnn with its trained weights on digits-rgb test images. Rules with `fit:` (pattern-*) are fitted once in
float32 on the batch itself and the statistics cast to each variant's dtype.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(__file__))
import _common as C  # noqa: E402

BOUNDED = {"lrp-zbox", "lrp-epsilon-gamma-box", "dtd-bounded"}
VARIANTS = ("bfloat16", "float16", "channels_last", "autocast_bfloat16")


def metrics(a: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Worst per-sample relative L2 error and cosine, and the top-1 % pixel overlap (float64)."""
    out = C.compare(a.float(), ref)
    ha = a.detach().double().sum(1).abs().flatten(1) if a.dim() > 2 else a.detach().double().abs().flatten(1)
    hr = ref.detach().double().sum(1).abs().flatten(1) if ref.dim() > 2 else ref.detach().double().abs().flatten(1)
    k = max(1, math.ceil(0.01 * ha.shape[1]))
    overlaps = []
    for i in range(ha.shape[0]):
        sa = set(ha[i].topk(k).indices.tolist())
        sr = set(hr[i].topk(k).indices.tolist())
        overlaps.append(len(sa & sr) / k)
    return {
        "rel_l2": float(f"{out['rel']:.4g}"),
        "cos": float(f"{out['cos']:.6g}"),
        "top1pct_overlap_mean": round(sum(overlaps) / len(overlaps), 4),
        "top1pct_overlap_min": round(min(overlaps), 4),
    }


def variant_inputs(model: torch.nn.Module, x: torch.Tensor, variant: str) -> tuple[torch.nn.Module, torch.Tensor]:
    m = copy.deepcopy(model)
    if variant in ("bfloat16", "float16"):
        dt = C.DTYPES[variant]
        return m.to(dt), x.to(dt)
    if variant == "channels_last":
        return m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return m, x


def _autocast(variant: str):
    import contextlib

    return torch.autocast("cpu", dtype=torch.bfloat16) if variant == "autocast_bfloat16" else contextlib.nullcontext()


def run_variant(fn: Callable[[], torch.Tensor], ref: torch.Tensor, variant: str) -> dict[str, Any]:
    from rulelang.errors import RulelangError

    t0 = time.perf_counter()
    try:
        with _autocast(variant):
            a = fn()
    except RulelangError as e:
        return {"ran": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    except Exception as e:  # noqa: BLE001 - reported: a non-rulelang error is a bug to fix
        return {"ran": False, "error": f"UNEXPECTED {type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    row = {"ran": True, "dtype": str(a.dtype).removeprefix("torch."), "seconds": round(time.perf_counter() - t0, 3)}
    if variant == "channels_last" and a.dim() == 4:
        row["result_channels_last"] = a.is_contiguous(memory_format=torch.channels_last)
    finite = bool(torch.isfinite(a).all())
    row["finite"] = finite
    row.update(metrics(a, ref))
    return row


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import rulelang
    from rulelang.errors import RulelangError
    from rulelang.lang.library import list_rules

    model = C.build_model(name)
    if name.startswith("digits"):
        xs, _ = rulelang.builtin_data("digits-rgb", split="test")
        x = xs[: args.batch].float()
    else:
        x = C.images(args.batch, C.input_shape(name, args.size))
    with torch.no_grad():
        t = model(x).argmax(1)
    lo, hi = float(x.min()), float(x.max())
    rules = args.rules.split(",") if args.rules else list_rules()
    out: dict[str, Any] = {
        "input_shape": list(x.shape),
        "variants": args.variants.split(","),
        "rules": {},
        "seconds_per_rule": {},
    }

    grad_ref = C.gradient_fn(model, x, t)()
    out["gradient_baseline"] = {}
    for variant in args.variants.split(","):
        m, xv = variant_inputs(model, x, variant)
        out["gradient_baseline"][variant] = run_variant(C.gradient_fn(m, xv, t), grad_ref, variant)

    for rule in rules:
        t0 = time.perf_counter()
        kw: dict[str, Any] = {"input_bounds": (lo, hi)} if rule in BOUNDED else {}
        ex = rulelang.compile(model, rule, example_input=x, check=False, **kw)
        fitted = None
        if ex.rules.fit:
            rulelang.fit(ex, x, progress=False)
            fitted = {tuple(k.split("__", 1)): v for k, v in ex.fitted.named_buffers()}
        row: dict[str, Any] = {}
        try:
            ref = ex(x, t)
        except RulelangError as e:  # float32 itself fails: nothing to compare against
            row["float32"] = {"ran": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            out["rules"][rule] = row
            continue
        for variant in args.variants.split(","):
            m, xv = variant_inputs(model, x, variant)

            def call(m=m, xv=xv, rule=rule, kw=kw, fitted=fitted) -> torch.Tensor:
                f = None
                if fitted is not None:
                    f = {k: v.to(xv.dtype) for k, v in fitted.items()}
                return rulelang.compile(m, rule, example_input=xv, check=False, fitted=f, **kw)(xv, t)

            row[variant] = run_variant(call, ref, variant)
        out["rules"][rule] = row
        out["seconds_per_rule"][rule] = round(time.perf_counter() - t0, 2)
        print(json.dumps({name: {rule: row}}), file=sys.stderr, flush=True)
    return out


def summarize(models: dict[str, Any]) -> dict[str, Any]:
    """Per model and variant: rules that ran / were refused, and the worst rel_l2, cosine, overlap among those run."""
    summary: dict[str, Any] = {}
    for name, res in models.items():
        per: dict[str, Any] = {}
        per["float32_failed"] = {r: v["float32"]["error"] for r, v in res["rules"].items() if "float32" in v}
        for variant in res["variants"]:
            rows = {r: v[variant] for r, v in res["rules"].items() if variant in v}
            ran = {r: v for r, v in rows.items() if v.get("ran")}
            worst = max(ran, key=lambda r: ran[r]["rel_l2"]) if ran else None
            per[variant] = {
                "ran": len(ran),
                "refused": {r: v["error"] for r, v in rows.items() if not v.get("ran")},
                "worst_rel_l2": [worst, ran[worst]["rel_l2"]] if worst else None,
                "median_rel_l2": sorted(v["rel_l2"] for v in ran.values())[len(ran) // 2] if ran else None,
                "worst_cos": min((v["cos"] for v in ran.values()), default=None),
                "worst_top1pct_overlap_mean": min((v["top1pct_overlap_mean"] for v in ran.values()), default=None),
                "gradient_baseline_rel_l2": res["gradient_baseline"].get(variant, {}).get("rel_l2"),
            }
        summary[name] = per
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="digits-cnn,vgg16,resnet50")
    p.add_argument("--size", type=int, default=64, help="input side of the torchvision models")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rules", default=None, help="comma-separated (default: every library rule)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="digits-cnn only")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.models = "digits-cnn"
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    models = {name: run_model(name, args) for name in args.models.split(",")}
    result = {
        "what": "error of low precision / channels_last / autocast against float32, per library rule",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "environment": C.environment("cpu"),
        "summary": summarize(models),
        "models": models,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    return C.emit(result, args.out)


if __name__ == "__main__":
    main()

"""Speed of the transformer rules on a small ViT and on ConvNeXt-Tiny, as ratios to the plain input gradient.

    python benchmarks/speed_modern.py                      # CPU, float32, prints JSON
    python benchmarks/speed_modern.py --device cuda --batch 32 --size 224

Models (random weights, seeded): `tv-vit-small` (torchvision VisionTransformer, 32x32, patch 4, 3 layers, width
64: the size of the built-in digits-vit, but with nn.MultiheadAttention so that LXT's rules apply), `digits-vit`
(the trained built-in, SDPA attention) and `convnext_tiny` (torchvision). Methods: the autograd gradient (the
baseline, 1.0), rulelang's `gradient`, `attn-lrp`, `cp-lrp`, `lrp-epsilon-plus`, and on the ViT LXT 2.x's AttnLRP and
CP-LRP (its rule functions applied as in tests/rules/test_transformers.py: one forward + one backward with
modified gradients). Each time is the median of `--repeats` calls after one warm-up call, the methods timed
round-robin; on CPU with one thread the clock is the thread's CPU time (robust to other processes' load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "rules"))

import _common as C  # noqa: E402

import rulelang  # noqa: E402

RULES = ("gradient", "attn-lrp", "cp-lrp", "lrp-epsilon-plus")


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "digits-vit":
        return rulelang.builtin_model("digits-vit").requires_grad_(False)
    if name == "tv-vit-small":
        import torchvision

        model = torchvision.models.VisionTransformer(32, 4, 3, 4, 64, 128, num_classes=10)
    else:
        model = rulelang.builtin_model(name)
    C.randomize(model, seed)
    with torch.no_grad():
        for m in model.modules():  # torchvision's ViT head starts at zero
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                m.weight.normal_(0.0, 0.1)
    return model.eval().requires_grad_(False)


def lxt_fn(model: torch.nn.Module, mode: str, x: torch.Tensor, target: torch.Tensor) -> Callable[[], Any]:
    from test_transformers import lxt_model

    patched = lxt_model(model, mode)

    def run() -> torch.Tensor:
        xx = x.detach().requires_grad_(True)
        y = patched(xx).gather(1, target[:, None]).sum()
        (g,) = torch.autograd.grad(y, xx)
        return xx.detach() * g

    return run


def measure_all(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, clock: str) -> dict[str, float]:
    """Median seconds per method, the methods timed round-robin (a change in machine load hits all alike).

    `clock` "cpu": this thread's CPU time (`time.thread_time`, with one torch thread all the work runs on it, so a
    loaded machine does not inflate it); "wall": `time.perf_counter` (with a device sync)."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in fns.items():
            C.sync(device)
            t0 = now()
            fn()
            C.sync(device)
            times[k].append(now() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = torch.device(args.device), C.DTYPES[args.dtype]
    model = build(name).to(device, dtype)
    side = 32 if name in ("digits-vit", "tv-vit-small") else args.size
    x = torch.randn(args.batch, 3, side, side, device=device, dtype=dtype)
    with torch.no_grad():
        target = model(x).argmax(1)
    fns: dict[str, Callable[[], Any]] = {"autograd": C.gradient_fn(model, x, target)}
    for rule in RULES:
        explainer = rulelang.compile(model, rule, example_input=x)
        fns[rule] = lambda e=explainer: e(x, target)
    if name == "tv-vit-small":
        for mode, label in (("attn", "lxt-attnlrp"), ("cp", "lxt-cplrp")):
            fns[label] = lxt_fn(model, mode, x, target)
    seconds = measure_all(fns, device, args.repeats, args.clock)
    base = seconds.pop("autograd")
    return {
        "input": list(x.shape),
        "clock": args.clock,
        "autograd_gradient_s": base,
        "ratio": {k: round(v / base, 3) for k, v in seconds.items()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tv-vit-small", "digits-vit", "convnext_tiny"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=list(C.DTYPES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="input side of the ImageNet models (ViTs: 32)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default=None,
        help="cpu: this thread's CPU time (the default on CPU with one thread: robust to other load); wall: elapsed",
    )
    args = p.parse_args(argv)
    if args.clock is None:
        args.clock = "cpu" if args.device == "cpu" and args.threads == 1 else "wall"
    torch.set_num_threads(args.threads)
    report = {"config": vars(args), "results": {name: bench(name, args) for name in args.models}}
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()

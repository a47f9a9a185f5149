"""Kernels behind the lowering's choices on this CPU (one thread). Prints one JSON object of median milliseconds.

- element-wise: the ReLU vjp, `stab` and DeepLIFT's rescale multiplier (why the lowering avoids `torch.where`);
- convolutions: α-β's two forward convolutions (w⁺, w⁻) against one over `cat([w⁺, w⁻])` and against one plus
  `z - zp`; its two transposed convolutions against one over concatenated channels (timed interleaved, round
  robin, on this thread's CPU clock, so load from other processes hits each variant alike).

    OMP_NUM_THREADS=1 python benchmarks/kernels.py            # both parts
    OMP_NUM_THREADS=1 python benchmarks/kernels.py --conv     # the convolution part only
    OMP_NUM_THREADS=1 python benchmarks/kernels.py --lowering resnet50:8:lrp-epsilon-alpha2-beta1,deeplift-rescale

`--lowering MODEL:BATCH:RULES` times, in one process and interleaved, the explainers compiled with this lowering's
rewrites (zn derived from z, nested `where`s resolved, `select_below`, ReLU outputs recomputed in the relevance
pass) and without them (the previous lowering),
against the plain input gradient (64x64 inputs, seeded random weights, default settings otherwise).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F


def _median_ms(f: Callable[[], object], n: int = 20) -> float:
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return round(ts[len(ts) // 2] * 1e3, 3)


def elementwise_report() -> dict[str, object]:
    """The ReLU vjp, `stab` and the DeepLIFT multiplier, old and new forms."""
    z = torch.randn(8, 256, 16, 16)  # 0.5 M floats, a ResNet-sized activation at batch 8
    s, out, m, eps = torch.randn_like(z), torch.relu(z), z >= 0, 1e-6
    a, b = z + eps, z - eps
    report = {
        "shape": list(z.shape),
        "add": _median_ms(lambda: z + eps),
        "ge": _median_ms(lambda: z >= 0),
        "where(mask, t, t)": _median_ms(lambda: torch.where(m, a, b)),
        "relu_vjp old: where(pre > 0, s, 0)": _median_ms(lambda: torch.where(z > 0, s, 0.0)),
        "relu_vjp new: threshold_backward(s, relu_out, 0)": _median_ms(
            lambda: torch.ops.aten.threshold_backward(s, out, 0)
        ),
        "stab old: z + eps * where(z >= 0, 1, -1)": _median_ms(
            lambda: z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        ),
        "stab new: z + ((z >= 0) * 2eps - eps)": _median_ms(lambda: z + ((z >= 0).to(z.dtype) * (2 * eps) - eps)),
    }
    report.update(_rescale(z, s))
    return report


def _rescale(x: torch.Tensor, r: torch.Tensor) -> dict[str, float]:
    """DeepLIFT's rescale multiplier at one ReLU (x its input, x0 a one-sample reference, R the relevance)."""
    from rulelang.compiler import prims

    x0 = 0.1 * torch.randn_like(x[:1])
    y, y0, thr = torch.relu(x), torch.relu(x0), 1e-7

    def old() -> torch.Tensor:  # the rule text lowered as written: 10 kernels, 2 of them `where`
        d = x - x0
        small = torch.abs(d) < thr
        g = prims.relu_vjp(r, y)
        return torch.where(small, g, r * (y - y0) / torch.where(small, torch.ones_like(d), d))

    def new() -> torch.Tensor:  # nested select resolved, `select_below`: 9 kernels, no `where`
        d = x - x0
        return prims.select_below(torch.abs(d), thr, prims.relu_vjp(r, y), r * (y - y0) / d)

    assert torch.equal(old(), new())
    return {
        "deeplift rescale per ReLU, old (2 where)": _median_ms(old),
        "deeplift rescale per ReLU, new": _median_ms(new),
    }


def _interleaved(fs: dict[str, Callable[[], object]], rounds: int = 15, clock: str = "wall") -> dict[str, float]:
    """Median milliseconds per callable, timed round robin; `clock` "cpu" reads this thread's CPU time (user +
    system), which time spent descheduled by other processes' load does not inflate."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    for f in fs.values():
        f()
    ts: dict[str, list[float]] = {k: [] for k in fs}
    for _ in range(rounds):
        for k, f in fs.items():
            t = now()
            f()
            ts[k].append(now() - t)
    return {k: round(sorted(v)[len(v) // 2] * 1e3, 3) for k, v in ts.items()}


#: (batch, in channels, side, out channels, kernel): ResNet50 / VGG16 layers at 64x64 input
CONV_SHAPES = [
    (1, 64, 32, 64, 3),
    (1, 256, 8, 256, 3),
    (1, 512, 4, 512, 3),
    (1, 1024, 4, 256, 1),
    (8, 64, 16, 64, 3),
    (8, 128, 8, 128, 3),
    (8, 256, 8, 64, 1),
    (8, 512, 2, 512, 3),
]


def conv_report() -> list[dict[str, object]]:
    """α-β's convolutions: separate, fused over concatenated weights, and with zn derived from z."""
    g = torch.Generator().manual_seed(0)
    return [_conv_row(shape, g) for shape in CONV_SHAPES]


def _conv_row(shape: tuple[int, int, int, int, int], g: torch.Generator) -> dict[str, object]:
    from rulelang.compiler import prims

    n, c, h, o, k = shape
    x = torch.relu(torch.randn(n, c, h, h, generator=g))
    w = torch.randn(o, c, k, k, generator=g) * 0.05
    wp, wn, pad = w.clamp(min=0), w.clamp(max=0), k // 2
    bp, bn = torch.rand(o, generator=g), -torch.rand(o, generator=g)
    wc, bc = torch.cat([wp, wn]), torch.cat([bp, bn])
    z = F.conv2d(x, w, bp + bn, 1, pad)
    sp, sn = torch.randn_like(z), torch.randn_like(z)

    def conv(ww: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, ww, bb, 1, pad)

    def vjp(s: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
        return prims.conv_vjp(s, x, ww, (1, 1), (pad, pad), (1, 1), 1)

    def derived() -> tuple[torch.Tensor, torch.Tensor]:
        zp = conv(wp, bp)
        return zp, z - zp

    times = _interleaved(
        {
            "one conv": lambda: conv(wp, bp),
            "zp, zn: two convs": lambda: (conv(wp, bp), conv(wn, bn)),
            "zp, zn: one conv over cat": lambda: conv(wc, bc).chunk(2, 1),
            "zp, zn: one conv, zn = z - zp": derived,
            "one vjp": lambda: vjp(sp, wp),
            "two vjps": lambda: (vjp(sp, wp), vjp(sn, wn)),
            "one vjp over cat": lambda: vjp(torch.cat([sp, sn], 1), wc),
        },
        clock="cpu",
    )
    return {"shape (N, C, H, O, k)": list(shape), **times}


def lowering_report(spec: str, rounds: int = 7) -> dict[str, object]:
    """Median seconds per call and ratios to the gradient, with and without this lowering's rewrites."""
    import contextlib
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _common as C

    import rulelang
    from rulelang.compiler import emitter, evaluate, lower

    name, batch, rules = spec.split(":")
    model = C.build_model(name, seed=0).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    x = C.images(int(batch), C.input_shape(name, 64), seed=0)
    t = torch.ones(int(batch), dtype=torch.long)

    @contextlib.contextmanager
    def previous() -> Iterator[None]:
        lower.DERIVE_COMPLEMENT, evaluate.FAST_WHERE, emitter.REMATERIALIZE = False, False, False
        try:
            yield
        finally:
            lower.DERIVE_COMPLEMENT, evaluate.FAST_WHERE, emitter.REMATERIALIZE = True, True, True

    fs: dict[str, Callable[[], object]] = {"gradient": C.gradient_fn(model, x, t)}
    for rule in rules.split(","):
        new = rulelang.compile(model, rule, example_input=x)
        with previous():
            old = rulelang.compile(model, rule, example_input=x)
        fs[f"{rule} new"] = lambda e=new: e(x, target=t)
        fs[f"{rule} previous"] = lambda e=old: e(x, target=t)
    out: dict[str, object] = {"model": name, "batch": int(batch), "rounds": rounds}
    for clock in ("cpu", "wall"):
        ms = _interleaved(fs, rounds, clock)
        out[f"{clock} ms"] = ms
        out[f"{clock} ratio"] = {k: round(v / ms["gradient"], 3) for k, v in ms.items()}
    return out


def main() -> None:
    torch.set_num_threads(1)
    if "--lowering" in sys.argv:
        print(json.dumps(lowering_report(sys.argv[sys.argv.index("--lowering") + 1]), indent=1))
        return
    report: dict[str, object] = {}
    if "--conv" not in sys.argv:
        report["elementwise"] = elementwise_report()
    report["alpha-beta convolutions"] = conv_report()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

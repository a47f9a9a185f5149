"""Element-wise kernels behind the ReLU vjp and `stab` on this CPU (one thread): why the lowering avoids
`torch.where`. Prints one JSON object of median milliseconds.

    OMP_NUM_THREADS=1 python benchmarks/kernels.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch


def _median_ms(f: Callable[[], object], n: int = 20) -> float:
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return round(ts[len(ts) // 2] * 1e3, 3)


def main() -> None:
    torch.set_num_threads(1)
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
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

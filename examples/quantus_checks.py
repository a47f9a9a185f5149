"""Quantus's sanity metrics on rulelang rules: `rulelang.quantus_explain` is a Quantus `explain_func`.

    python examples/quantus_checks.py            # 32 test digits, digits-cnn
    python examples/quantus_checks.py --fast     # 6 digits (CI)

Runs Quantus's RandomLogit (Sixt et al. 2020's random-logit test; SSIM of |attribution|) and MPRT (cascading
model-parameter randomization, Adebayo et al. 2018; Spearman rank correlation) on lrp-zplus / excitation-bp and
the gradient. Needs `pip install quantus`. Quantus scores the raw maps (no sign-flip maximum, no channel sum),
so its numbers differ from `rulelang analyze`'s paper-faithful SSIM; the ordering of the rules is the same.
MPRT uses excitation-bp (z+ seeded with 1, maps >= 0): Quantus refuses a batch whose maps are all negative, which
lrp-zplus (seeded with the logit) produces once the top layer is random and the logit turns negative.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rulelang  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", help="6 images (CI)")
    p.add_argument("-n", type=int, default=32)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import quantus

    n = 6 if args.fast else args.n
    model = rulelang.builtin_model("digits-cnn")
    x, y = rulelang.builtin_data("digits-rgb", "test")
    x, y = x[:n].numpy(), y[:n].numpy()
    results: dict[str, object] = {}
    random_logit = quantus.RandomLogit(num_classes=10, seed=0, abs=True, disable_warnings=True)
    for rule in ("lrp-zplus", "gradient"):
        scores = random_logit(
            model=model,
            x_batch=x,
            y_batch=y,
            explain_func=rulelang.quantus_explain,
            explain_func_kwargs={"rule": rule},
            device="cpu",
        )
        results[f"RandomLogit {rule}"] = float(np.median(scores))
        print(f"Quantus RandomLogit (SSIM of |maps|, median over {n} digits), {rule}: {np.median(scores):.3f}")
    mprt = quantus.MPRT(disable_warnings=True)
    for rule in ("excitation-bp", "gradient"):
        layers = mprt(
            model=model,
            x_batch=x,
            y_batch=y,
            explain_func=rulelang.quantus_explain,
            explain_func_kwargs={"rule": rule},
            device="cpu",
        )
        curve = {name: float(np.mean(v)) for name, v in layers.items()}
        results[f"MPRT {rule}"] = curve
        steps = ", ".join(f"{k} {v:.2f}" for k, v in curve.items())
        print(f"Quantus MPRT (Spearman to the original map, top layer first), {rule}: {steps}")
    return results


if __name__ == "__main__":
    main()

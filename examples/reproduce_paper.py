"""Reproduce *When Explanations Lie* (Sixt, Granz & Landgraf, ICML 2020) on the built-in networks: the CSC figure
(random relevance probes injected at the logits, median |cos| per readout layer) and the sanity checks
(random-logit test, cascading parameter randomization), on digits-cnn (6 conv + 2 dense) and digits-vgg16 (VGG-16's
13 conv + 3 dense), so the depth at which each rule collapses is visible.

    python examples/reproduce_paper.py                 # the paper's rules, 32 images, ~minutes on 2 CPU cores
    python examples/reproduce_paper.py -n 200          # the paper's image count
    python examples/reproduce_paper.py --fast          # 3 rules, 4 images (CI)

Writes out/reproduce/<model>/report.{json,md} + figures, and out/reproduce/csc-depth.png (both models side by
side on the paper's 1 − median axis). Prints each model's table and, per rule, the paper's CSC verdict
(research/paper.md §2.3, §3.2) next to what was measured here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rulelang  # noqa: E402
from rulelang.analysis.report import CONVERGED  # noqa: E402
from rulelang.viz import plot_csc_models  # noqa: E402

#: the rules the paper evaluates and its CSC verdict on VGG-16 / ResNet-50 (paper.md §2.3; "?" = not recoverable)
PAPER: dict[str, str] = {
    "gradient": "does not converge",
    "lrp-z": "does not converge",
    "lrp-alpha1-beta0": "converges",
    "excitation-bp": "converges",
    "lrp-alpha2-beta1": "converges",
    "lrp-alpha5-beta4": "converges less",
    "lrp-cmp-alpha1-beta0": "? (evaluated, result not recoverable)",
    "lrp-cmp-alpha2-beta1": "? (evaluated, result not recoverable)",
    "dtd-bounded": "converges",
    "pattern-attribution": "converges",
    "pattern-net": "? (plotted, value unknown)",
    "guided-backprop": "converges",
    "deconvnet": "converges",
    "rectgrad": "converges",
    "deeplift-rescale": "does not converge",
    "deeplift-reveal-cancel": "does not converge",
    "deeplift-ablation": "converges",
}
FAST_RULES = ("lrp-alpha1-beta0", "lrp-alpha2-beta1", "gradient")
MODELS = ("digits-cnn", "digits-vgg16")


def measured(report: rulelang.analysis.report.Report, rule: str) -> str:
    r = report[rule]
    low = r.csc_lowest_layer()
    if low is None or low.get("median") is None:
        return "not measured (" + "; ".join(f"{k}: {v}" for k, v in r.errors.items()) + ")"
    med = low["median"]
    word = "converges" if med >= CONVERGED else "does not converge"
    return f"{word} (median |cos| {med:.6f} at {low['node']}, baseline {low['baseline']:.3f})"


def main(argv: list[str] | None = None) -> dict[str, rulelang.analysis.report.Report]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", help="3 rules, 4 images, CSC and sanity only (CI)")
    p.add_argument("-n", type=int, default=32, help="images per model (the paper: 200)")
    p.add_argument("--rules", nargs="+", default=None, help="rules (default: the paper's)")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("-o", "--output", default="out/reproduce")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rules = args.rules or (list(FAST_RULES) if args.fast else list(PAPER))
    n = 4 if args.fast else args.n
    checks = ("csc", "sanity") if args.fast else ("static", "theory", "csc", "sanity")
    out = Path(args.output)
    reports = {}
    for model in args.models:
        print(f"== {model}: {len(rules)} rules, {n} images", flush=True)
        rep = rulelang.analyze(
            model, rules, n=n, checks=checks, seed=args.seed, out=out / model, heatmap_images=2 if args.fast else 4
        )
        reports[model] = rep
        print(rep.table("text"))
        print()
    path = plot_csc_models(
        {m: {r.rule: r.csc for r in rep.rules} for m, rep in reports.items()},
        out / "csc-depth.png",
        title="CSC from the logits down to the input: depth at work",
    )
    print(f"wrote {path} and {', '.join(str(out / m / 'report.md') for m in reports)}")
    print()
    print("paper (VGG-16/ResNet-50, §2.3) vs here, CSC at the lowest multi-channel layer:")
    for rule in rules:
        print(f"  {rule}: paper {PAPER.get(rule, '–')}")
        for model, rep in reports.items():
            print(f"      {model}: {measured(rep, rule)}")
    return reports


if __name__ == "__main__":
    main()

"""Write your own rule, check it, see its static verdict and measure whether it collapses (CSC).

    python examples/write_a_rule.py            # 16 test digits
    python examples/write_a_rule.py --fast     # 4 digits (CI)

The rule is a z+ variant, "leaky z+": negative weights are not dropped but kept with a small factor `leak`
(leak = 0 is z+, leak = 1 is LRP-z). Every map of z+ is non-negative, so Theorem 1 of Sixt et al. (2020) says the
explanation must collapse to rank 1; with leak > 0 the maps are signed and the theorem no longer applies. This
script shows what the static analysis proves for both and what CSC measures on digits-cnn.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rulelang  # noqa: E402
from rulelang.cli import main as cli  # noqa: E402

LEAKY_ZPLUS = """\
rulelang: 1
name: leaky-zplus
summary: z+ with negative weights kept at a factor `leak` (0 = z+, 1 = LRP-z); ReLUs, pooling and adds from _lrp
extend: _lrp
params:
  leak: 0.1
require:
  - leak >= 0
rules:
  - match: linear
    relevance: |
      wl = w.pos + leak * w.neg
      z = layer(x, w=wl, b=0)
      x * vjp(R / stab(z, eps), w=wl)
"""


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", help="4 images (CI)")
    p.add_argument("-n", type=int, default=16)
    args = p.parse_args(argv)
    n = 4 if args.fast else args.n
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "leaky-zplus.yaml"
        path.write_text(LEAKY_ZPLUS)

        # 1. check the file: syntax, names, parameters (exit code 0 = valid)
        print(f"$ rulelang check {path.name}")
        assert cli(["check", str(path)]) == 0

        # 1b. property-test it on small random networks (`rulelang test FILE`): finite, batch independent,
        # float32 = float64, ...; a failure prints a minimal counterexample as runnable Python
        from rulelang.testing import check

        tested = check(path, profile="ci", examples=3 if args.fast else None)
        print("\n".join(f"  {r.line()}" for r in tested))
        assert all(r.ok for r in tested), "\n\n".join(str(r) for r in tested if not r.ok)
        results["rulelang test"] = {r.prop: r.status for r in tested}

        # 2. the static verdict on the model, without and with the leak (no data needed)
        model = rulelang.builtin_model("digits-cnn")
        x, _ = rulelang.builtin_data("digits-rgb", "test")
        for leak in (0.0, 0.1):
            explainer = rulelang.compile(model, path, example_input=x[:1], leak=leak)
            verdict = rulelang.analysis.static(explainer)
            results[f"static leak={leak}"] = verdict.verdict
            print(f"\nleak = {leak}:")
            print(verdict)

        # 3. measure both settings next to z+ and the gradient: CSC and the sanity checks
        variants = []
        for leak in (0.0, 0.1):
            variant = Path(tmp) / f"leaky-zplus-{leak:g}.yaml"
            variant.write_text(
                LEAKY_ZPLUS.replace("name: leaky-zplus", f"name: leaky-zplus-{leak:g}").replace(
                    "leak: 0.1", f"leak: {leak}"
                )
            )
            variants.append(variant)
        report = rulelang.analyze(
            "digits-cnn",
            [*variants, "lrp-zplus", "gradient"],
            n=n,
            checks=("static", "csc", "sanity"),
            heatmap_images=0,
            progress=False,
        )
        print()
        print(report.table("text"))
        for v in variants:
            low = report[v.stem].csc_lowest_layer()
            results[f"csc {v.stem}"] = low["median"] if low else None
    return results


if __name__ == "__main__":
    main()

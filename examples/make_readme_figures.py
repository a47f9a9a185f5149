"""Regenerate the README's figures in docs/ (committed; each PNG < 300 KB).

    python examples/make_readme_figures.py                          # runs the CSC analyses (a few minutes)
    python examples/make_readme_figures.py --from out/analysis      # reuse `rulelang analyze`'s report.json
    python examples/make_readme_figures.py --from out/analysis --depth-from out/analysis out/vgg16

- docs/csc.png: CSC per readout layer for every library rule on digits-cnn, as `rulelang analyze` (no arguments)
  draws it — the same data, from its report.json or from a CSC-only run with the same defaults;
- docs/csc-depth.png: the paper's key rules on digits-cnn (6 conv + 2 dense) and digits-vgg16 (13 conv + 3 dense),
  on the paper's 1 − median axis: depth at work (α2β1 converges only on the deeper network).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rulelang  # noqa: E402
from rulelang.analysis.analyze import DEFAULTS  # noqa: E402
from rulelang.viz import plot_csc, plot_csc_models  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
DEPTH_RULES = ("lrp-alpha1-beta0", "lrp-alpha2-beta1", "lrp-alpha5-beta4", "guided-backprop", "lrp-z", "gradient")
MAX_BYTES = 300_000
DOC_DPI = 72  # keeps every PNG under MAX_BYTES with all library rules drawn


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", metavar="DIR", help="a `rulelang analyze` output folder (digits-cnn)")
    p.add_argument(
        "--depth-from", nargs="+", metavar="DIR", help="`rulelang analyze` folders of digits-cnn / digits-vgg16"
    )
    p.add_argument("-n", type=int, default=DEFAULTS["n"], help=f"images (default {DEFAULTS['n']}, as the CLI)")
    p.add_argument("-o", "--output", default=str(DOCS))
    args = p.parse_args(argv)
    out = Path(args.output)
    if args.source:
        doc = json.loads((Path(args.source) / "report.json").read_text())
        cscs = {rule: r.get("csc") for rule, r in doc["rules"].items()}
        model, n = doc["meta"]["model"], doc["meta"]["n"]
    else:
        rep = rulelang.analyze("digits-cnn", None, n=args.n, checks=("csc",), heatmap_images=0)
        cscs = {r.rule: r.csc for r in rep.rules}
        model, n = "digits-cnn", rep.meta["n"]
    written = [
        plot_csc(
            cscs,
            out / "csc.png",
            title=f"{model}, every library rule: random probes at the logits, median |cos| per layer (n = {n})",
            dpi=DOC_DPI,
        )
    ]
    depth: dict[str, dict[str, object]] = {}
    for d in args.depth_from or []:  # reports of earlier runs (any rules; the depth rules are picked)
        doc = json.loads((Path(d) / "report.json").read_text())
        depth[doc["meta"]["model"]] = {r: doc["rules"][r]["csc"] for r in DEPTH_RULES if r in doc["rules"]}
    for m in ("digits-cnn", "digits-vgg16"):
        if m not in depth:
            rep = rulelang.analyze(m, list(DEPTH_RULES), n=args.n, checks=("csc",), heatmap_images=0)
            depth[m] = {r.rule: r.csc for r in rep.rules}
    written.append(
        plot_csc_models(
            depth, out / "csc-depth.png", title="CSC from the logits down to the input: depth at work", dpi=DOC_DPI
        )
    )
    for path in written:
        size = path.stat().st_size
        print(f"wrote {path} ({size / 1000:.0f} KB)")
        if size > MAX_BYTES:
            raise SystemExit(f"{path} is larger than {MAX_BYTES // 1000} KB")
    return written


if __name__ == "__main__":
    main()

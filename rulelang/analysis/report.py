"""The result of :func:`rulelang.analyze`: one :class:`RuleReport` per rule plus run metadata.

    report = rulelang.analyze("digits-cnn", ["lrp-zplus", "gradient"])
    print(report.table())          # one row per rule
    report.save("out/analysis")    # report.json + report.md + figures/*.png
    report.to_dict()               # the JSON, as Python objects

The per-rule entries are the ``to_dict()`` of the analysis results (``rulelang.analysis.static``, ``theory``,
``csc``, ``random_logit``, ``randomization``); a check that failed for a rule is ``null`` and its message is in
the rule's ``errors``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "CONVERGED", "INSENSITIVE", "Report", "RuleReport", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
#: median |cos| at which the paper's measurements land for the converging rules (paper.md §3.2; not a bound)
CONVERGED = 0.99
#: SSIM at or above which a sanity check counts as failed: the map hardly changed (issue 9's threshold)
INSENSITIVE = 0.9

#: (key, header) of the table columns
COLUMNS: tuple[tuple[str, str], ...] = (
    ("rule", "rule"),
    ("static", "static verdict"),
    ("theory_csc", "theory CSC"),
    ("chain_ratio", "chain σ2/σ1"),
    ("interlayer", "inter-layer Π σ1/σ2"),
    ("csc_layer", "CSC lowest layer"),
    ("csc_input", "CSC input"),
    ("random_logit", "random-logit SSIM"),
    ("top_randomized", "SSIM top randomized"),
    ("conclusion", "conclusion"),
)


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy/torch scalars and arrays become numbers and lists, NaN/inf become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return jsonable(obj.to_dict())
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return _finite(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


@dataclass
class RuleReport:
    """Everything measured for one rule. ``static``, ``theory``, ``csc``, ``sanity`` hold the ``to_dict()`` of
    the analysis results (None when the check was not run or failed); ``errors`` maps a check (or "compile",
    "fit") to its one-line error message; ``seconds`` the wall time of each check."""

    rule: str
    path: str | None = None
    static: dict | None = None
    theory: dict | None = None
    csc: dict | None = None
    sanity: dict | None = None
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: for the figures, not serialised: {"heatmaps": N×C×H×W array, "randomization": [(step, N×C×H×W)],
    #: "random_logit_scores": per-image SSIMs}
    artifacts: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------ numbers
    def csc_readouts(self, node: str | None = None) -> list[dict]:
        """The readouts of injection `node` (default: the first injection), highest layer first."""
        inj = (self.csc or {}).get("injections") or {}
        if not inj:
            return []
        key = node if node is not None else next(iter(inj))
        return list((inj.get(key) or {}).get("readouts") or [])

    def csc_input(self) -> dict | None:
        """The readout at the model input (the last readout)."""
        reads = self.csc_readouts()
        return reads[-1] if reads else None

    def csc_lowest_layer(self) -> dict | None:
        """The readout at the lowest layer with more than one channel, below which only the input lies."""
        reads = self.csc_readouts()
        for r in reversed(reads[:-1]):
            if (r.get("channels") or 0) > 1:
                return r
        return None

    def theory_csc(self) -> float | None:
        """The theoretical CSC: median |cos| between the columns of the accumulated relevance map at the
        input (``theory.to_dict()`` key ``"csc"``, or the last product's ``"cos_median"``)."""
        t = self.theory or {}
        for key in ("csc", "theoretical_csc", "input_csc"):
            if _finite(t.get(key)) is not None:
                return _finite(t.get(key))
        products = t.get("chain") or t.get("products") or []
        if isinstance(products, dict):
            products = list(products.values())
        at_input = [p for p in products if isinstance(p, dict) and p.get("node") == "input"]
        for p in at_input or list(reversed(products)):
            if isinstance(p, dict):
                for key in ("cos_median", "csc", "median_cos"):
                    if _finite(p.get(key)) is not None:
                        return _finite(p.get(key))
        return None

    def chain_ratio(self) -> float | None:
        """σ2/σ1 of the accumulated relevance map from the logits to the input (theory's chain at "input")."""
        chain = (self.theory or {}).get("chain") or []
        at_input = [p for p in chain if isinstance(p, dict) and p.get("node") == "input"]
        return _finite(at_input[0].get("sigma_ratio")) if at_input else None

    def interlayer(self) -> str | None:
        """Π σ1/σ2 of the paper's inter-layer items over the pairs that compose, with "(computed/pairs)"."""
        il = (self.theory or {}).get("interlayer") or {}
        product, computed = _finite(il.get("product")), il.get("computed")
        if product is None or not computed:
            return None
        return f"{product:.3g} ({computed}/{il.get('pairs')})"

    def random_logit_ssim(self) -> float | None:
        return _finite(((self.sanity or {}).get("random_logit") or {}).get("ssim_median"))

    def top_randomized_ssim(self) -> float | None:
        steps = ((self.sanity or {}).get("randomization") or {}).get("steps") or []
        return _finite(steps[0].get("ssim_median")) if steps else None

    def conclusion(self) -> str:
        """One word: ``error`` (nothing measured), ``collapses`` (the measured CSC — or, without it, the theory
        or the static proof — says the explanation converges to rank 1), ``insensitive`` (no collapse, but a
        sanity check fails: the map hardly changes with the class or the top layer), ``sensitive`` (neither),
        ``unknown`` (the checks run do not decide)."""
        layer = self.csc_lowest_layer()
        inp = self.csc_input()
        maybe = [_finite(layer.get("median")) if layer else None, _finite(inp.get("whole_map")) if inp else None]
        measured: list[float] = [m for m in maybe if m is not None]
        sanity = [s for s in (self.random_logit_ssim(), self.top_randomized_ssim()) if s is not None]
        nothing = not measured and not sanity and self.theory_csc() is None and not self.static
        if nothing:
            return "error" if self.errors else "unknown"
        if measured:
            if max(measured) >= CONVERGED:
                return "collapses"
        elif self.theory_csc() is not None:
            if self.theory_csc() >= CONVERGED:  # type: ignore[operator]
                return "collapses"
        elif (self.static or {}).get("verdict") == "nonnegative-chain":
            return "collapses"
        if sanity:
            return "insensitive" if max(sanity) >= INSENSITIVE else "sensitive"
        return "unknown" if not measured else "sensitive"

    def row(self) -> dict[str, str]:
        """The table row as strings (see :data:`COLUMNS`); a failed check shows ``error``."""

        def num(v: float | None, check: str, log: bool = False) -> str:
            """3 decimals; with `log`, values that round to 1 as the paper's axis: 1-4e-05 = 1 − 4·10⁻⁵."""
            if v is not None:
                return f"1-{1 - v:.0e}" if log and 0.9995 <= v < 1 else f"{v:.3f}"
            return "error" if check in self.errors else "–"

        layer = self.csc_lowest_layer()
        inp = self.csc_input()
        static = (self.static or {}).get("verdict") or ("error" if "static" in self.errors else "–")
        if "compile" in self.errors or "fit" in self.errors:
            static = static if self.static else "error"
        layer_txt = num(_finite(layer.get("median")) if layer else None, "csc", log=True)
        if layer is not None and layer_txt not in ("–", "error"):
            layer_txt += f" ({layer.get('node')})"
        return {
            "rule": self.rule,
            "static": static,
            "theory_csc": num(self.theory_csc(), "theory", log=True),
            "chain_ratio": f"{ratio:.2g}" if (ratio := self.chain_ratio()) is not None else num(None, "theory"),
            "interlayer": self.interlayer() or num(None, "theory"),
            "csc_layer": layer_txt,
            "csc_input": num(_finite(inp.get("whole_map")) if inp else None, "csc", log=True),
            "random_logit": num(self.random_logit_ssim(), "sanity"),
            "top_randomized": num(self.top_randomized_ssim(), "sanity"),
            "conclusion": self.conclusion(),
        }

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "rule": self.rule,
                "path": self.path,
                "conclusion": self.conclusion(),
                "static": self.static,
                "theory": self.theory,
                "csc": self.csc,
                "sanity": self.sanity,
                "errors": self.errors,
                "seconds": self.seconds,
                "notes": self.notes,
            }
        )


@dataclass
class Report:
    """The analysis of several rules on one model and data set (see the module docstring)."""

    meta: dict[str, Any]
    rules: list[RuleReport]
    #: figure name -> path relative to the report folder (filled by :meth:`save`)
    figures: dict[str, str] = field(default_factory=dict)
    #: for the figures, not serialised: {"images": N×3×H×W display images, "labels": ..., "titles": [...]}
    artifacts: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, rule: str) -> RuleReport:
        for r in self.rules:
            if r.rule == rule:
                return r
        raise KeyError(rule)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written as ``report.json`` (schema: see the README, "report.json")."""
        return jsonable(
            {
                "schema": SCHEMA_VERSION,
                "meta": self.meta,
                "columns": dict(COLUMNS),
                "table": [r.row() for r in self.rules],
                "figures": self.figures,
                "rules": {r.rule: r.to_dict() for r in self.rules},
            }
        )

    def table(self, fmt: str = "markdown") -> str:
        """The summary table, one row per rule: Markdown (``fmt="markdown"``) or aligned plain text
        (``fmt="text"``)."""
        rows = [r.row() for r in self.rules]
        headers = [h for _, h in COLUMNS]
        cells = [[row[k] for k, _ in COLUMNS] for row in rows]
        if fmt == "markdown":
            lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
            return "\n".join(lines)
        if fmt == "text":
            widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
            lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
            lines.append("  ".join("-" * w for w in widths))
            lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
            return "\n".join(line.rstrip() for line in lines)
        from ..errors import RulelangError

        raise RulelangError(f"unknown table format {fmt!r}: use 'markdown' or 'text'")

    def __str__(self) -> str:
        return self.table("text")

    def markdown(self) -> str:
        """The text of ``report.md``: run summary, the table, how to read it, links to the figures."""
        m = self.meta
        lines = [
            f"# rulelang analysis: {m.get('model', '?')} on {m.get('data', '?')}",
            "",
            f"{len(self.rules)} rule(s), n = {m.get('n')} images, seed {m.get('seed')}, device {m.get('device')}, "
            f"checks {', '.join(m.get('checks', []))}; {m.get('seconds_total', 0):.0f} s "
            f"(rulelang {m.get('versions', {}).get('rulelang', '?')}, torch {m.get('versions', {}).get('torch', '?')}).",
            "",
            self.table("markdown"),
            "",
            "**How to read it.** *static verdict*: the sign analysis of each rule's backward maps "
            "(`nonnegative-chain`: Theorem 1 of Sixt et al. 2020 applies, the explanation must converge to rank 1). "
            "*theory CSC*: median |cos| between the columns of the accumulated relevance map, measured on real inputs; "
            "*chain σ2/σ1*: of that map (near 0 = rank 1); *inter-layer Π σ1/σ2*: the product of the paper's "
            "inter-layer items S_l^½ V_lᵀ U_l+1 S_l+1^½ over the block pairs that compose (computed/pairs): orders of "
            "magnitude above the gradient's row predicts collapse. "
            "*CSC lowest layer* / *CSC input*: median |cos| between random relevance vectors injected at the "
            f"{_injection_label(m.get('at'))} after propagating down to "
            "the lowest multi-channel layer / to the input (whole-map); near 1 = the rule forgets what was "
            "injected. *random-logit SSIM*: similarity of the maps for the true and a random class; "
            "*SSIM top randomized*: of the maps before and after the top layer's weights are re-initialised; near "
            f"1 = insensitive. Conclusion: `collapses` (CSC ≥ {CONVERGED}), `insensitive` (a sanity SSIM ≥ "
            f"{INSENSITIVE}), `sensitive`, `error` (see the rule's errors in report.json).",
            "",
        ]
        errors = [(r.rule, k, v) for r in self.rules for k, v in r.errors.items()]
        if errors:
            lines += ["## Errors", ""] + [f"- `{rule}` ({check}): {msg}" for rule, check, msg in errors] + [""]
        if self.figures:
            lines += ["## Figures", ""]
            for name, rel in self.figures.items():
                if rel.startswith("figures/heatmaps-") or rel.startswith("figures/randomization-"):
                    continue
                lines += [f"### {name}", "", f"![{name}]({rel})", ""]
            per_rule = [
                (name, rel)
                for name, rel in self.figures.items()
                if rel.startswith("figures/heatmaps-") or rel.startswith("figures/randomization-")
            ]
            if per_rule:
                lines += ["### Per rule", ""] + [f"- [{name}]({rel})" for name, rel in per_rule] + [""]
        return "\n".join(lines)

    def save(self, directory: str | os.PathLike, figures: bool = True) -> Path:
        """Write ``report.json``, ``report.md`` and (unless ``figures=False``) ``figures/*.png`` into
        `directory` (created). Returns the path of report.json."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if figures:
            from ..viz.plots import write_figures

            self.figures = write_figures(self, out)
        (out / "report.md").write_text(self.markdown() + "\n")
        path = out / "report.json"
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    @property
    def rule_names(self) -> Sequence[str]:
        return [r.rule for r in self.rules]


def _injection_label(at: Any) -> str:
    """`logits` for the default injection at the output, else the first injection node's name."""
    first = (at or ["output"])[0]
    return "logits" if first == "output" else str(first)

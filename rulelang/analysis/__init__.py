"""Faithfulness analysis of a compiled explainer (Sixt, Granz & Landgraf 2020, *When Explanations Lie*).

Each function reads only the explainer's public surface and returns a result with `.to_dict()` and a
readable `str()`:

- `static(explainer)`: sign/linearity abstract interpretation of every rule body -> chain verdict;
- `theory(explainer, x)`: the actual per-node relevance maps, their signs and spectra;
- `csc(explainer, x, at=...)`: empirical cosine similarity convergence of random probes;
- `random_logit(explainer, x, y)`, `randomization(model, rule, x, y)`: the sanity checks.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "static": "rulelang.analysis.static:static",
    "theory": "rulelang.analysis.theory:theory",
    "simulate_chain": "rulelang.analysis.theory:simulate_chain",
    "csc": "rulelang.analysis.csc:csc",
    "random_logit": "rulelang.analysis.sanity:random_logit",
    "randomization": "rulelang.analysis.sanity:randomization",
    "analyze": "rulelang.analysis.analyze:analyze",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name].split(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rulelang.analysis' has no attribute {name!r}")

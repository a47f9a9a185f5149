"""Faithfulness analysis of a compiled explainer (Sixt, Granz & Landgraf 2020, *When Explanations Lie*).

Each function reads only the explainer's public surface and returns a result with `.to_dict()` and a
readable `str()`:

- `static(explainer)`: sign/linearity abstract interpretation of every rule body -> chain verdict;
- `theory(explainer, x)`: the actual per-node relevance maps, their signs and spectra;
- `csc(explainer, x, at=...)`: empirical cosine similarity convergence of random probes;
- `random_logit(explainer, x, y)`, `randomization(model, rule, x, y)`: the sanity checks.
"""

from __future__ import annotations

# Bound eagerly: the functions share their submodules' names, and Python rebinds a package attribute to the
# submodule when that is first imported, which would shadow a lazily exported function.
from .analyze import analyze
from .csc import csc
from .sanity import random_logit, randomization
from .static import static
from .theory import interlayer_factors, simulate_chain, theory

__all__ = [
    "analyze",
    "csc",
    "interlayer_factors",
    "random_logit",
    "randomization",
    "simulate_chain",
    "static",
    "theory",
]

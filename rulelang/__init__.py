"""rulelang: modified-backpropagation attribution rules as data.

import rulelang
explainer = rulelang.compile(model, "lrp-zplus", example_input=x)
attribution = explainer(x, target=labels)
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    AnalysisError,
    CompileError,
    DataError,
    ExplainError,
    ModelError,
    NonFiniteError,
    NonFiniteWarning,
    RuleError,
    RulelangError,
    UsageError,
)
from .types import Keep, Target

__version__ = "0.1.0"

# Public API, imported on first use so that `import rulelang` stays cheap (torch is only loaded when needed).
_LAZY: dict[str, str] = {
    "load": "rulelang.lang.loader:load",
    "compile": "rulelang.compiler.explainer:compile",
    "Explainer": "rulelang.compiler.explainer:Explainer",
    "fit": "rulelang.compiler.fitting:fit",
    "builtin_model": "rulelang.models:builtin_model",
    "builtin_data": "rulelang.data:builtin_data",
    "sample_images": "rulelang.data:sample_images",
    "heatmap": "rulelang.viz.heatmap:heatmap",
    "smoothgrad": "rulelang.compiler.wrappers:smoothgrad",
    "integrated": "rulelang.compiler.wrappers:integrated",
    "analyze": "rulelang.analysis.analyze:analyze",
    "quantus_explain": "rulelang.analysis.quantus:quantus_explain",
}

__all__ = [
    "AnalysisError",
    "DataError",
    "UsageError",
    "Keep",
    "Target",
    "CompileError",
    "ExplainError",
    "ModelError",
    "NonFiniteError",
    "NonFiniteWarning",
    "RuleError",
    "RulelangError",
    "__version__",
    *_LAZY,
]


#: Sub-packages reachable as attributes after a plain `import rulelang` (`rulelang.analysis.static(...)`).
_SUBPACKAGES = ("analysis", "testing")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"rulelang.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name].split(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rulelang' has no attribute {name!r}")

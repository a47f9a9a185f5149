"""Testing rules: hypothesis strategies for random models, inputs and parameters (`strategies`), property checks
(`properties`), and a runner that shrinks a failure to a runnable counterexample (`check`, `rulelang test`).

```python
from rulelang.testing import check
results = check("my-rule.yaml", profile="ci")   # one Result per property
assert all(r.ok for r in results), "\\n".join(map(str, results))
```
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROPERTIES", "PropertyFailed", "Result", "check", "check_property"]


def __getattr__(name: str) -> Any:  # lazy: `rulelang.testing.models` is imported by benchmarks without hypothesis
    if name in ("PROPERTIES", "Result", "check", "check_property"):
        from . import runner

        return getattr(runner, name)
    if name == "PropertyFailed":
        from .properties import PropertyFailed

        return PropertyFailed
    raise AttributeError(f"module 'rulelang.testing' has no attribute {name!r}")

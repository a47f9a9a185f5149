"""`rulelang.fit`: estimates a rule file's `fit:` statistics (PatternNet's signal patterns) in one pass over data.

Drives `fitstats.PatternStats` through the explainer's public surface only: `fit_targets()`, `graph`,
`node_parameters`, `activations` and `layer_function`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, overload

import torch
from tqdm.auto import tqdm

from ..errors import RulelangError
from ..lang.ast import RuleFile
from .explainer import Explainer
from .explainer import compile as compile_
from .fitstats import PatternStats, load_fitted, save_fitted

__all__ = ["batches_of", "fit", "load_fitted", "save_fitted"]


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a {obj.dtype} tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:5]}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} ({', '.join(type(v).__name__ for v in obj[:3])}...)"
    return f"a {type(obj).__name__}"


def _input_of(batch: Any, where: str) -> torch.Tensor:
    """The input tensor of one batch: the batch itself, or the first element of an (input, label, ...) pair."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise RulelangError(
        f"rulelang.fit: {where} is {_describe(batch)}; expected an input tensor or an (input, label) pair "
        "whose first element is the input tensor"
    )


def batches_of(data: Any) -> Iterator[torch.Tensor]:
    """The input batches of `data`: one tensor (one batch), one `(x, y)` batch, or an iterable (list, DataLoader)
    of tensors or `(x, y)` pairs. A tuple/list of two tensors whose second is 1-d with the first's batch size,
    or of integer dtype, is read as one `(x, y)` batch; otherwise as a list of batches."""
    if isinstance(data, torch.Tensor):
        yield data
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(v, torch.Tensor) for v in data):
        x, y = data
        if not y.is_floating_point() or (y.dim() <= 1 and x.dim() > 1 and len(y) == len(x)):
            yield x
            return
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
        raise RulelangError(
            f"rulelang.fit: data is {_describe(data)}; expected a tensor (one batch), an (x, y) batch, or an "
            "iterable of batches (a list or a DataLoader yielding tensors or (x, y) pairs)"
        )
    for k, batch in enumerate(data):
        yield _input_of(batch, f"batch {k} of data")


@overload
def fit(
    explainer_or_rules: Explainer,
    model: Any,
    data: Any = None,
    *,
    max_batches: int | None = None,
    progress: bool = True,
) -> Explainer: ...


@overload
def fit(
    explainer_or_rules: str | os.PathLike[str] | RuleFile,
    model: torch.nn.Module,
    data: Any,
    *,
    max_batches: int | None = None,
    progress: bool = True,
    **params: Any,
) -> Explainer: ...


def fit(
    explainer_or_rules: Any,
    model: Any = None,
    data: Any = None,
    *,
    max_batches: int | None = None,
    progress: bool = True,
    **params: Any,
) -> Explainer:
    """Estimates the rule file's `fit:` statistics in one pass over `data` and returns the explainer.

    The statistics are PatternNet's signal patterns (Kindermans et al. 2018, "Learning how to explain neural
    networks: PatternNet and PatternAttribution"), with its `linear` and `relu` estimators. Two call forms:
    ``fit(explainer, data)`` and ``fit(rules, model, data)`` (compiles first).

    Args:
        explainer_or_rules: a compiled Explainer, or a rule file (name, path, RuleFile) to compile `model` with.
        model: the model (with a rule file), or the data (with an explainer: `fit(explainer, data)`).
        data: a tensor (one batch), an `(x, y)` batch, or an iterable / DataLoader of tensors or `(x, y)` pairs.
        max_batches: use at most this many batches.
        progress: show a progress bar.
        params: rule-file parameter overrides (when compiling).

    Returns:
        The explainer, with the statistics installed (`explainer.save_fitted(path)` keeps them).

    Raises:
        RulelangError: unusable data (the message says what it got), or a rule file without `fit:`.
    """
    if isinstance(explainer_or_rules, Explainer):
        explainer = explainer_or_rules
        if data is None and not isinstance(model, torch.nn.Module):
            data, model = model, None
        if data is None:
            raise RulelangError("rulelang.fit needs data: a tensor, an (x, y) batch, or an iterable of batches")
        inputs = batches_of(data)
    else:
        if not isinstance(model, torch.nn.Module) or data is None:
            raise RulelangError("usage: rulelang.fit(explainer, data) or rulelang.fit(rules, model, data)")
        inputs = batches_of(data)
        first = next(inputs, None)
        if first is None:
            raise RulelangError("rulelang.fit got empty data")
        explainer = compile_(model, explainer_or_rules, example_input=first, **params)
        inputs = _chain(first, inputs)
    specs = explainer.fit_targets()
    if not specs:
        raise RulelangError(f"rule file {explainer.rules.name!r} declares nothing to fit (no `fit:` section)")
    ops = {op.name: op for _, op in specs}
    weights = explainer.node_parameters(list(ops))
    layers = {name: explainer.layer_function(name) for name in ops}
    consumers = explainer.graph.consumers()
    relu_after = {name: any(u.kind == "relu" for u in consumers.get(op.out, [])) for name, op in ops.items()}
    stats = {
        (f.name, op.name): PatternStats(weights[op.name]["w"], unit_dim=1 if op.kind == "conv" else -1)
        for f, op in specs
    }
    if max_batches is not None:
        inputs = (b for b, _ in zip(inputs, range(max_batches)))
    seen = 0
    for x in tqdm(inputs, desc=f"fitting {explainer.rules.name}", disable=not progress, leave=False):
        seen += 1
        acts = explainer.activations(x, list(ops))
        for f, op in specs:
            xin, z = acts[op.name]
            mask = (z > 0) if f.estimator == "relu" and relu_after[op.name] else None
            stats[(f.name, op.name)].update(layers[op.name], xin, mask)
    if not seen:
        raise RulelangError("rulelang.fit got empty data")
    fitted = {key: s.pattern().to(weights[key[1]]["w"].dtype) for key, s in stats.items()}
    explainer.set_fitted(fitted)
    return explainer


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest

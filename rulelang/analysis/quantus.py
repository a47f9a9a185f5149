"""A Quantus-compatible ``explain_func``: any rulelang rule as an explanation method for Quantus metrics.

    import quantus, rulelang
    metric = quantus.RandomLogit(num_classes=10)
    scores = metric(model=model, x_batch=x, y_batch=y, explain_func=rulelang.quantus_explain,
                    explain_func_kwargs={"rule": "lrp-zplus"})

Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with numpy inputs
(N×C×H×W) and integer targets, and expects a numpy array of attributions back (Quantus ≥ 0.4; its
``quantus.explain`` has the same signature). Metrics that randomize the model (MPRT) pass a modified copy of
the model; the rule is compiled for each model object it sees (a small cache keeps the last few) and refreshed
before every call, so in-place re-initialised weights are used.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import RulelangError

__all__ = ["quantus_explain"]

_CACHE_SIZE = 4
_cache: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()


def _key(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else id(value)


def _explainer(model: Any, rule: Any, example: Any, params: dict[str, Any]) -> Any:
    import rulelang

    key = (id(model), _key(rule), _key(params), tuple(example.shape[1:]), example.dtype, str(example.device))
    hit = _cache.get(key)
    if hit is not None and hit[0]() is model:
        _cache.move_to_end(key)
        explainer = hit[1]
        explainer.refresh()  # weights may have been re-initialised in place since the last call
        return explainer
    explainer = rulelang.compile(model, rule, example_input=example[:1], **params)
    _cache[key] = (weakref.ref(model), explainer)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return explainer


def quantus_explain(
    model: Any,
    inputs: Any,
    targets: Any,
    rule: Any = "lrp-zplus",
    *,
    device: Any = None,
    channel_first: bool = True,
    fitted: Any = None,
    **params: Any,
) -> np.ndarray:
    """Attributions of `rule` for `inputs` and `targets`, as a numpy array shaped like `inputs`.

    Parameters
    ----------
    model : a torch ``nn.Module`` (put in eval mode; its weights are not changed).
    inputs : N×C×H×W numpy array or tensor (N×H×W×C with ``channel_first=False``).
    targets : one class per input (int array/list/tensor) or a single int.
    rule : library name, rule file path or loaded rule file; ``**params`` override its parameters.
    device : where to compute (default: the model's parameters' device). fitted : statistics for rules with
        ``fit:`` (a path or dict, as ``rulelang.compile(fitted=...)``).
    Other keyword arguments Quantus may forward (``softmax``, ``method``, ...) are not accepted: pass only rule
    parameters in ``explain_func_kwargs``.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise RulelangError(f"quantus_explain needs a torch nn.Module, got {type(model).__name__}")
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    dev = torch.device(device) if device is not None else (ref.device if ref is not None else torch.device("cpu"))
    dtype = ref.dtype if ref is not None else torch.float32
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    if x.dim() < 2:
        raise RulelangError(f"inputs must be a batch (N×C×H×W), got shape {list(x.shape)}")
    if not channel_first:
        x = x.movedim(-1, 1)
    x = x.to(device=dev, dtype=dtype)
    y = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)).long()
    if y.dim() == 0:
        y = y.expand(x.shape[0])
    if y.shape[0] != x.shape[0]:
        raise RulelangError(f"{x.shape[0]} inputs but {y.shape[0]} targets")
    was_training = model.training
    model.eval()
    try:
        kwargs = dict(params)
        if fitted is not None:
            kwargs["fitted"] = fitted
        explainer = _explainer(model, rule, x, kwargs)
        attribution = explainer(x, y.to(dev))
    finally:
        model.train(was_training)
    out = attribution.detach().cpu().numpy()
    return out if channel_first else np.moveaxis(out, 1, -1)

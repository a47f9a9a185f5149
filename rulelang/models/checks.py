"""Input checks of the built-in models: a built-in model knows its data set and says so when fed another.

`builtin_model` records on the model which name it was built as, the data set it was trained on and the shape of
one input (`rulelang_model`, `rulelang_data`, `rulelang_input_shape`); `check_input` compares a batch with them.
The digits models call it first thing in `forward` (it does nothing on the proxies of a symbolic trace), and
`rulelang explain` before running a model.
"""

from __future__ import annotations

from typing import Any

from ..errors import ModelError

__all__ = ["check_input", "describe_input"]


def describe_input(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape)


def check_input(model: Any, x: Any) -> None:
    """Raise a one-line `ModelError` when `x` (a batch) does not have the shape a built-in model expects."""
    import torch

    expected = getattr(model, "rulelang_input_shape", None)
    if expected is None or not isinstance(x, torch.Tensor):  # not a built-in model, or a symbolic trace
        return
    name = getattr(model, "rulelang_model", type(model).__name__)
    data = getattr(model, "rulelang_data", None)
    source = f" (rulelang.builtin_data({data!r}))" if data else ""
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != tuple(expected):
        got = describe_input(tuple(x.shape))
        hint = ""
        if data == "digits-rgb" and x.dim() == 4 and x.shape[1] == 1:
            hint = "; builtin_data('digits') is the grey variant: use 'digits-rgb'"
        raise ModelError(
            f"{name} expects {data or 'inputs'} batches of N×{describe_input(tuple(expected))}{source}, got {got}{hint}"
        )

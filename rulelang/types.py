"""Types of the public API's arguments, for annotations in user code (``from rulelang.types import Target``).

Torch-free: the tensor member of `Target` is a forward reference, resolved by type checkers only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeAlias, Union

if TYPE_CHECKING:
    import torch

__all__ = ["Keep", "Target"]

#: ``target=``: the class(es) to explain. An int (every sample), one index per sample (a sequence, an integer
#: tensor or array of shape (batch,)), or None (each sample's predicted class, the argmax of the output).
#: Negative indices count from the end; floats, bools and strings are refused, never rounded.
Target: TypeAlias = Union[int, Sequence[int], "torch.Tensor", None]

#: ``keep=``: which nodes' relevances an explanation keeps. False/None (none), True or "all" (every node), or a
#: list of node names (op names, module paths or fx node names).
Keep: TypeAlias = bool | Literal["all"] | Sequence[str] | None

"""The implementation registry: op kind -> the object that lowers ops of that kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ...graph.ir import Op
from ...lang.kinds import Kind
from .base import Generic

T = TypeVar("T", bound=type[Generic])

#: Kind -> its implementation (kinds absent here use `GENERIC`; their catalog row declares `generic=True`).
REGISTRY: dict[Kind, Generic] = {}

#: The fallback: replay the traced call, differentiate the replay with torch.func.
GENERIC = Generic()


def register(*kinds: Kind) -> Callable[[T], T]:
    """Class decorator: one instance of the class implements every kind in `kinds` (one class per kind)."""

    def add(cls: T) -> T:
        impl = cls()
        for kind in kinds:
            if kind in REGISTRY:
                raise ValueError(f"op kind `{kind}` already has an implementation: {type(REGISTRY[kind]).__name__}")
            REGISTRY[kind] = impl
        cls.kinds = tuple(kinds)
        return cls

    return add


def impl_for(op: Op) -> Generic:
    """The implementation lowering `op`: its kind's registered class when it handles this call form, else GENERIC."""
    impl = REGISTRY.get(op.kind)
    return impl if impl is not None and impl.handles(op) else GENERIC

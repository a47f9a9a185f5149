"""Typed, immutable AST of the rule language.

Expression and selector nodes compare by structure only: their source position (`pos`) is excluded from
equality, so `parse(format(e)) == e` holds although positions differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Pos:
    """A position in a rule file: 1-based line and column (of the first character), and the file path."""

    line: int
    col: int
    path: str | None = None
    end_line: int | None = None
    end_col: int | None = None


def _pos() -> Pos | None:
    return field(default=None, compare=False, repr=False, hash=False)


# ----------------------------------------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Num:
    value: float
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Name:
    """A variable: x, y, R, w, b, x0, y0, i, a param, a `define:` name, a local, a stream name."""

    id: str
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Attr:
    """`e.pos`, `e.neg`, `e.abs`; any other attribute of `x`/`x[i]` reads a per-node forward quantity."""

    value: Expr
    attr: str
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Index:
    """`x[i]`: one input of a multi-input op."""

    value: Expr
    index: Expr
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Call:
    """`f(a, b, k=v)`; `kwargs` keeps source order."""

    func: str
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[str, Expr], ...] = ()
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Unary:
    op: str  # "-", "+", "~"
    operand: Expr
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Binary:
    op: str  # "+", "-", "*", "/", "**", "==", "!=", "<", "<=", ">", ">=", "&", "|"
    left: Expr
    right: Expr
    pos: Pos | None = _pos()


Expr = Union[Num, Name, Attr, Index, Call, Unary, Binary]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class Assign:
    name: str
    value: Expr
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Block:
    """`name = expr` lines followed by one final expression (the block's value)."""

    assigns: tuple[Assign, ...]
    result: Expr
    pos: Pos | None = _pos()


# ------------------------------------------------------------------------------------------------- selectors
@dataclass(frozen=True)
class Kind:
    """An op kind or alias from `kinds.py` (`conv`, `linear`, ...)."""

    name: str
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Position:
    """`first` or `last`."""

    which: str
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class NameGlob:
    """`name("features.1*")`: fnmatch glob on the node's name or its module path."""

    pattern: str
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class And:
    left: Selector
    right: Selector
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Or:
    left: Selector
    right: Selector
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Not:
    operand: Selector
    pos: Pos | None = _pos()


Selector = Union[Kind, Position, NameGlob, And, Or, Not]  # noqa: UP007 (a runtime alias)


# ------------------------------------------------------------------------------------------------ rule files
#: Stream name of single-stream rule files: bodies read the incoming relevance as `R`.
DEFAULT_STREAM = "R"


@dataclass(frozen=True)
class Rule:
    """One entry of `rules:` (or the file's `default:`, whose `match` is None).

    `relevance` maps each stream name to the block computing that stream's relevance for the node's input(s);
    single-stream files have exactly one entry, keyed `DEFAULT_STREAM`. `forward` declares per-node forward
    quantities (computed in the forward pass, read by consumers as `x.<name>`).
    """

    match: Selector | None
    relevance: tuple[tuple[str, Block], ...]
    forward: tuple[tuple[str, Expr], ...] = ()
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Fit:
    """A statistic fitted from data in one pass (`fit:`), e.g. PatternNet's `pattern` with estimator `relu`."""

    name: str
    estimator: str
    match: Selector | None = None
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class RuleFile:
    """A loaded rule file with its `extend:` chain resolved and its parameters bound."""

    name: str
    summary: str
    version: int
    references: tuple[str, ...]
    params: tuple[tuple[str, object], ...]  # bound values: float, or tuple of floats (per channel)
    require: tuple[Expr, ...]
    define: tuple[tuple[str, Expr], ...]
    streams: tuple[str, ...]  # (DEFAULT_STREAM,) unless the file declares `streams:`
    init: tuple[tuple[str, Block], ...]  # per stream
    final: Block
    rules: tuple[Rule, ...]
    default: Rule | None = None
    reference: str | None = None  # None | "zeros" | "input" | "blur" ...
    fit: tuple[Fit, ...] = ()
    extends: tuple[str, ...] = ()  # names/paths of the files this one extends, nearest first
    conserves: bool = False  # the file declares that it conserves relevance (checked by `rulelang test`)
    path: str | None = field(default=None, compare=False)

    @property
    def param_dict(self) -> dict[str, object]:
        return dict(self.params)

"""Reasoning about selectors: which op kinds a selector can match, and whether rules can ever match.

A selector is a boolean formula over the node's kind and the non-kind atoms `first`, `last` and each
`name("glob")` (treated as independent: sound for coverage, since real nodes are a subset of assignments).
Nodes of kind `other` are matched only by a file's `default:` rule (see kinds.py).
"""

from __future__ import annotations

from itertools import product

from . import kinds as K
from .ast import And, Kind, NameGlob, Not, Or, Position, Selector

#: The kinds a `match:` selector can select (everything but `other`).
UNIVERSE: frozenset[str] = K.KINDS - {"other"}
_MAX_ATOMS = 10

Atom = tuple[str, str]  # ("pos", "first") or ("glob", pattern)


def atoms(s: Selector) -> set[Atom]:
    if isinstance(s, Position):
        return {("pos", s.which)}
    if isinstance(s, NameGlob):
        return {("glob", s.pattern)}
    if isinstance(s, Not):
        return atoms(s.operand)
    if isinstance(s, (And, Or)):
        return atoms(s.left) | atoms(s.right)
    return set()


def holds(s: Selector, kind: str, truth: dict[Atom, bool]) -> bool:
    if isinstance(s, Kind):
        return kind in K.expand(s.name)
    if isinstance(s, Position):
        return truth[("pos", s.which)]
    if isinstance(s, NameGlob):
        return truth[("glob", s.pattern)]
    if isinstance(s, Not):
        return not holds(s.operand, kind, truth)
    if isinstance(s, And):
        return holds(s.left, kind, truth) and holds(s.right, kind, truth)
    if isinstance(s, Or):
        return holds(s.left, kind, truth) or holds(s.right, kind, truth)
    raise TypeError(f"not a selector: {s!r}")


def _cases(atom_list: list[Atom]):  # type: ignore[no-untyped-def]
    for kind in sorted(UNIVERSE):
        for values in product((False, True), repeat=len(atom_list)):
            yield kind, dict(zip(atom_list, values))


def possible_kinds(s: Selector | None) -> frozenset[str]:
    """The op kinds of the nodes `s` can match (None, a `default:` rule, matches every kind)."""
    if s is None:
        return K.KINDS
    atom_list = sorted(atoms(s))
    if len(atom_list) > _MAX_ATOMS:
        return UNIVERSE
    return frozenset(kind for kind, truth in _cases(atom_list) if holds(s, kind, truth))


def covered_by(s: Selector, earlier: list[Selector]) -> bool:
    """True when every node `s` can match is matched by one of `earlier` (so a rule with `s` never fires)."""
    atom_list = sorted(atoms(s).union(*(atoms(e) for e in earlier)))
    if len(atom_list) > _MAX_ATOMS:
        return False
    return all(
        any(holds(e, kind, truth) for e in earlier) for kind, truth in _cases(atom_list) if holds(s, kind, truth)
    )

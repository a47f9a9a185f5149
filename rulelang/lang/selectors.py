"""Reasoning about selectors: which op kinds a selector can match, and whether rules can ever match.

A selector is a boolean formula over the node's kind and the non-kind atoms `first`, `last` and each
`name("glob")` (treated as independent: sound for coverage, since real nodes are a subset of assignments).
Nodes of kind `other` are matched only by a file's `default:` rule (see kinds.py).

A *case* is one kind plus one truth value per atom. The set of cases a selector holds on is a bit mask (a Python
int) built from the formula with `&`, `|` and `~`, so the shadowing check of a whole file (`Coverage`) costs one
mask per distinct selector: linear in the number of rules, not quadratic.
"""

from __future__ import annotations

from functools import lru_cache

from . import kinds as K
from .ast import And, Kind, NameGlob, Not, Or, Position, Selector

#: The kinds a `match:` selector can select (everything but `other`).
UNIVERSE: frozenset[str] = K.KINDS - {"other"}
_MAX_ATOMS = 10
_KINDS: tuple[str, ...] = tuple(sorted(UNIVERSE))
_NK = len(_KINDS)

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


@lru_cache(maxsize=4096)
def possible_kinds(s: Selector | None) -> frozenset[str]:
    """The op kinds of the nodes `s` can match (None, a `default:` rule, matches every kind)."""
    if s is None:
        return K.KINDS
    atom_list = sorted(atoms(s))
    if len(atom_list) > _MAX_ATOMS:
        return UNIVERSE
    mask = _Masks(len(atom_list)).of(s, {a: j for j, a in enumerate(atom_list)})
    period = _masks_period(len(atom_list))
    return frozenset(k for i, k in enumerate(_KINDS) if (mask >> i) & period)


# ------------------------------------------------------------------------------------------------ bit masks
def _repeat(pattern: int, period: int, count: int) -> int:
    """`pattern` (of `period` bits) repeated `count` times (`count` a power of two)."""
    out, n = pattern, 1
    while n < count:
        out |= out << (period * n)
        n *= 2
    return out


def _masks_period(n_atoms: int) -> int:
    """Bits 0, NK, 2 NK, ...: ANDed with `mask >> kind_index`, the cases of that kind."""
    return _repeat(1, _NK, 2**n_atoms)


class _Masks:
    """Bit masks over the cases of `n` atoms: case index = kind index + NK * (atom truth bits)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.full = (1 << (_NK << n)) - 1
        self.kind = {k: _repeat(1 << i, _NK, 2**n) for i, k in enumerate(_KINDS)}
        self.atom = []
        for j in range(n):
            block = _NK << j  # cases with atom j false, then as many with it true
            self.atom.append(_repeat(((1 << block) - 1) << block, 2 * block, 2 ** (n - j - 1)))

    def of(self, s: Selector, index: dict[Atom, int]) -> int:
        if isinstance(s, Kind):
            out = 0
            for k in K.expand(s.name):
                out |= self.kind.get(k, 0)
            return out
        if isinstance(s, Position):
            return self.atom[index[("pos", s.which)]]
        if isinstance(s, NameGlob):
            return self.atom[index[("glob", s.pattern)]]
        if isinstance(s, Not):
            return self.full & ~self.of(s.operand, index)
        if isinstance(s, And):
            return self.of(s.left, index) & self.of(s.right, index)
        if isinstance(s, Or):
            return self.of(s.left, index) | self.of(s.right, index)
        raise TypeError(f"not a selector: {s!r}")


class Coverage:
    """The cases matched by the rules seen so far, in order: `shadowed(s)` says whether a rule with selector `s`
    can never fire because earlier rules match every node it selects; `add(s)` records it.

    Exact while the file uses at most `_MAX_ATOMS` distinct non-kind atoms; beyond that nothing is reported
    shadowed (as before: the check gives up rather than enumerate 2^atoms cases).
    """

    def __init__(self) -> None:
        self.index: dict[Atom, int] = {}
        self.masks = _Masks(0)
        self.covered = 0
        self.empty = True
        self.gave_up = False
        self._memo: dict[Selector, int] = {}

    def _grow(self, s: Selector) -> bool:
        new = sorted(atoms(s) - self.index.keys())
        if not new:
            return True
        if len(self.index) + len(new) > _MAX_ATOMS:
            self.gave_up = True
            return False
        for a in new:  # earlier selectors do not read the new atom: their cases hold for both of its values
            self.covered |= self.covered << (_NK << len(self.index))
            self.index[a] = len(self.index)
        self.masks = _Masks(len(self.index))
        self._memo.clear()
        return True

    def _mask(self, s: Selector) -> int:
        if s not in self._memo:
            self._memo[s] = self.masks.of(s, self.index)
        return self._memo[s]

    def shadowed(self, s: Selector) -> bool:
        if self.empty or self.gave_up or not self._grow(s):
            return False
        return self._mask(s) & ~self.covered == 0

    def add(self, s: Selector) -> None:
        self.empty = False
        if not self.gave_up and self._grow(s):
            self.covered |= self._mask(s)

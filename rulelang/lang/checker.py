"""Semantic checks of a loaded rule file: names, functions and arity, attributes, indexing, per-kind
availability of `w`/`b`/`i`, use before assignment, and rules that can never match (warnings).

The names visible in each context are the table `CONTEXTS` below (one `Context` row per context: rule body,
`forward:`, `init:`, `final:`). Everywhere: parameters and definitions; in a rule body also its earlier locals.
`w`/`b` and fitted names exist where every kind the selector can match is parametric, `i`/`x[i]` where some kind
it can match is multi-input; a `default:` rule is a rule body matching every kind (so no `w`/`b`, `x[i]`
allowed). A `define:` expression is checked where it is used: the names it reads must be visible there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RuleError
from . import kinds as K
from .ast import Attr, Block, Call, Expr, Index, Name, Pos, Rule, RuleFile, Selector
from .builtins import ELEMENTWISE_ATTRS, FUNCTIONS, arity_text
from .diagnostics import did_you_mean, error_at
from .printer import format_selector
from .selectors import Coverage, possible_kinds
from .visit import children, walk

_WB_HINT = (
    "`w` and `b` exist only when every op kind the selector can match is parametric "
    "(dense, conv, affine); narrow it, e.g. `... & linear`"
)


@dataclass
class Scope:
    context: str  # "rule", "forward", "init", "final"
    names: set[str]
    missing: dict[str, tuple[str, str | None]]  # known-but-unavailable name -> (message, hint)
    index_ok: bool = False
    wb_ok: bool = False
    where: str = ""  # "rules matching `relu`", "`init:`"


@dataclass(frozen=True)
class Context:
    """One row of the context table: which built-in names a context sees."""

    base: frozenset[str]  # of x, y, target
    relevance: bool  # R / the stream names
    node: bool  # w, b, i, x[i] and fitted names (when the selector's kinds allow them)
    x0: bool  # with `reference:`
    y0: bool  # with `reference:`
    sees: str = ""  # the hint when a name is not visible
    where: str = ""  # how messages name the context ("" for rule contexts: from the selector)


CONTEXTS: dict[str, Context] = {
    "rule": Context(frozenset({"x", "y"}), relevance=True, node=True, x0=True, y0=True),
    "forward": Context(frozenset({"x", "y"}), relevance=False, node=True, x0=True, y0=True),
    "init": Context(
        frozenset({"y", "target"}),
        relevance=False,
        node=False,
        x0=False,
        y0=True,
        sees="`init:` sees y, target, y0, parameters and definitions",
        where="`init:`",
    ),
    "final": Context(
        frozenset({"x"}),
        relevance=True,
        node=False,
        x0=True,
        y0=False,
        sees="`final:` sees x (the model input), the relevance, x0, parameters, definitions",
        where="`final:`",
    ),
}


@dataclass
class _Checker:
    rf: RuleFile
    problems: list[RuleError] = field(default_factory=list)

    def __post_init__(self) -> None:
        rf = self.rf
        self.params = {k for k, _ in rf.params}
        self.defines = dict(rf.define)
        self.fits = {f.name for f in rf.fit}
        self.forward_names = {n for r in self._all_rules() for n, _ in r.forward}
        self.define_free: dict[str, list[Name]] = {}

    def _all_rules(self) -> list[Rule]:
        return list(self.rf.rules) + ([self.rf.default] if self.rf.default else [])

    def err(self, pos: Pos | None, message: str, hint: str | None = None, severity: str = "error") -> None:
        self.problems.append(error_at(pos, message, hint, severity=severity, path=self.rf.path))

    # ---------------------------------------------------------------------------------------- scopes
    def scope(self, context: str, match: Selector | None = None, is_default: bool = False) -> Scope:
        rf, row = self.rf, CONTEXTS[context]
        kinds = possible_kinds(match) if (match is not None or is_default) else frozenset()
        where = row.where
        if row.node:
            where = "the `default:` rule" if is_default else f"rules matching `{format_selector(match)}`"  # type: ignore[arg-type]
        names = set(self.params) | set(self.defines) | set(row.base)
        missing: dict[str, tuple[str, str | None]] = {}
        streams = set(rf.streams)
        if row.relevance:
            names |= streams
        if "R" not in streams:
            missing["R"] = (
                f"this file has streams {', '.join(f'`{s}`' for s in rf.streams)}: read them by name, not as `R`",
                None,
            )
        if not row.relevance:
            hint = "`forward:` runs in the forward pass" if context == "forward" else None
            missing.update({s: (f"relevance `{s}` is not available in {where}", hint) for s in streams})
        for n in ("x", "y"):
            if n not in row.base:
                missing[n] = (f"`{n}` is not available in {where}", row.sees)
        if "target" not in row.base:
            missing["target"] = ("`target` is only available in `init:`", None)
        wb_ok = row.node and bool(kinds) and kinds <= K.PARAMETRIC
        index_ok = row.node and bool(kinds & K.MULTI_INPUT)
        for n in ("w", "b"):
            if wb_ok:
                names.add(n)
            elif row.node:
                missing[n] = (f"`{n}` is not defined for {where}", _WB_HINT)
            else:
                missing[n] = (f"`{n}` is not available in {where}", None)
        if index_ok:
            names.add("i")
        else:
            missing["i"] = (
                f"`i` is not defined for {where}",
                "`i` and `x[i]` are for multi-input ops (add, mul, cat, matmul)",
            )
        for n, visible in (("x0", row.x0), ("y0", row.y0)):
            if rf.reference is None:
                missing[n] = (f"`{n}` needs a reference pass", "declare `reference: zeros` (or `input`, `blur`)")
            elif visible:
                names.add(n)
            else:
                missing[n] = (f"`{n}` is not available in {where}", None)
        for f in self.fits:
            if wb_ok:
                names.add(f)
            else:
                missing[f] = (f"fitted `{f}` is not defined for {where or 'this context'}", _WB_HINT)
        return Scope(context, names, missing, index_ok, wb_ok, where)

    # ----------------------------------------------------------------------------------- expressions
    def name(self, n: Name, scope: Scope, local: set[str], later: dict[str, Pos | None]) -> None:
        if n.id in local:
            return
        if n.id in self.defines and n.id in scope.names:
            for inner in self.define_free.get(n.id, []):
                if inner.id not in scope.names:
                    msg, _ = scope.missing.get(inner.id, (f"unknown name `{inner.id}`", None))
                    self.err(
                        n.pos,
                        f"definition `{n.id}` reads `{inner.id}`: {msg}",
                        f"`{inner.id}` is read at line {inner.pos.line}" if inner.pos else None,
                    )
                    return
            return
        if n.id in scope.names:
            return
        if n.id in later:
            p = later[n.id]
            self.err(
                n.pos, f"`{n.id}` is used before it is assigned", f"it is assigned at line {p.line}" if p else None
            )
        elif n.id in scope.missing:
            msg, hint = scope.missing[n.id]
            self.err(n.pos, msg, hint)
        else:
            self.err(n.pos, f"unknown name `{n.id}`", did_you_mean(n.id, scope.names | local))

    def expr(
        self,
        e: Expr,
        scope: Scope,
        local: set[str] = frozenset(),  # type: ignore[assignment]
        later: dict[str, Pos | None] | None = None,
    ) -> None:
        later = later or {}
        if isinstance(e, Name):
            self.name(e, scope, local, later)
            return
        if isinstance(e, Call):
            self.call(e, scope)
        elif isinstance(e, Attr):
            self.attr(e, scope)
        elif isinstance(e, Index):
            if not (isinstance(e.value, Name) and e.value.id in ("x", "x0")):
                self.err(e.pos, "only `x` and `x0` can be indexed (`x[i]`: input i of a multi-input op)")
            elif not scope.index_ok and e.value.id in scope.names:
                self.err(
                    e.pos,
                    f"`{e.value.id}[...]` is not defined for {scope.where or 'this context'}",
                    "`x[i]` is for multi-input ops (add, mul, cat, matmul)",
                )
        for c in children(e):
            self.expr(c, scope, local, later)

    def call(self, e: Call, scope: Scope) -> None:
        """Checks a call against its builtin record: name, contexts, arity, keywords, optional arguments."""
        b = FUNCTIONS.get(e.func)
        if b is None:
            self.err(e.pos, f"unknown function `{e.func}`", did_you_mean(e.func, FUNCTIONS))
            return
        if scope.context not in b.contexts:
            used = " and ".join(f"`{c}:`" if c != "rule" else "rule bodies" for c in b.contexts)
            what = "applies the node's op" if b.node_bound else "is a rule-body function"
            self.err(
                e.pos,
                f"`{e.func}` is not available in {scope.where or 'this context'}",
                f"`{e.func}` {what}; it is used in {used}",
            )
            return
        if not b.min_args <= len(e.args) <= b.max_args:
            self.err(e.pos, f"`{e.func}` takes {arity_text(b)}, got {len(e.args)}", f"usage: {b.usage}")
        kw = dict(e.kwargs)
        for k in kw:
            if k not in b.keywords:
                self.err(e.pos, f"`{e.func}` has no keyword `{k}`", did_you_mean(k, b.keywords) or f"usage: {b.usage}")
        if b.keywords_need_weights and kw and not scope.wb_ok:
            self.err(e.pos, f"`{e.func}(..., {next(iter(kw))}=...)` is not defined for {scope.where}", _WB_HINT)
        twice = [k for j, k in enumerate(b.optional) if k in kw and len(e.args) > b.min_args + j]
        if twice:
            self.err(e.pos, f"`{e.func}` gets `{twice[0]}` both by position and by keyword", f"usage: {b.usage}")
        elif b.needs_optional and len(e.args) <= b.min_args and not any(k in kw for k in b.optional):
            names = " or ".join(f"`{k}`" for k in b.optional)
            self.err(e.pos, f"`{e.func}` needs {names}", f"usage: {b.usage}")

    def attr(self, e: Attr, scope: Scope) -> None:
        if e.attr in ELEMENTWISE_ATTRS:
            return
        pos = e.pos
        if pos is not None and pos.end_line is not None and pos.end_col is not None:
            pos = Pos(pos.end_line, pos.end_col - len(e.attr), pos.path)
        base = e.value.value if isinstance(e.value, Index) else e.value
        if e.attr in self.forward_names:
            if not (isinstance(base, Name) and base.id == "x"):
                self.err(pos, f"forward quantity `.{e.attr}` can only be read from `x` or `x[i]`")
            return
        hint = did_you_mean(e.attr, set(ELEMENTWISE_ATTRS) | self.forward_names) or (
            "attributes are `.pos`, `.neg`, `.abs`, and forward quantities declared under a rule's `forward:`"
        )
        self.err(pos, f"unknown attribute `.{e.attr}`", hint)

    def block(self, b: Block, scope: Scope) -> None:
        local: set[str] = set()
        later: dict[str, Pos | None] = {}
        for a in b.assigns:
            later.setdefault(a.name, a.pos)
        used: set[str] = set()
        for _k, a in enumerate(b.assigns):
            if a.name in ("x", "y", "R", "w", "b", "i", "x0", "y0", "target") or a.name in self.rf.streams:
                self.err(a.pos, f"cannot assign to the built-in name `{a.name}`", "choose another name")
            pending = {n: p for n, p in later.items() if n not in local}
            self.expr(a.value, scope, local, pending)
            used |= {n.id for n in walk(a.value) if isinstance(n, Name)}
            local.add(a.name)
        self.expr(b.result, scope, local, {})
        used |= {n.id for n in walk(b.result) if isinstance(n, Name)}
        for a in b.assigns:
            if a.name not in used:
                self.err(a.pos, f"local `{a.name}` is never used", None, severity="warning")

    # ---------------------------------------------------------------------------------------- file
    def defines_(self) -> None:
        """Check each definition's syntax-level names, detect cycles, compute the names it reads."""
        everything = Scope(
            "rule",
            set(self.params)
            | set(self.defines)
            | set(self.fits)
            | set(self.rf.streams)
            | {"x", "y", "R", "w", "b", "i", "target"}
            | ({"x0", "y0"} if self.rf.reference else set()),
            {},
            True,
            True,
            "a definition",
        )
        if self.rf.reference is None:
            everything.missing = {
                n: (f"`{n}` needs a reference pass", "declare `reference: zeros`") for n in ("x0", "y0")
            }
        for _name, e in self.rf.define:
            self.expr(e, everything)
        state: dict[str, int] = {}

        def free(name: str) -> list[Name]:
            if state.get(name) == 2:
                return self.define_free[name]
            if state.get(name) == 1:
                self.err(self.defines[name].pos, f"definition `{name}` refers to itself")
                return []
            state[name] = 1
            out: list[Name] = []
            for n in walk(self.defines[name]):
                if isinstance(n, Name):
                    out += free(n.id) if n.id in self.defines and n.id not in self.params else [n]
            state[name] = 2
            self.define_free[name] = out
            return out

        for name in self.defines:
            free(name)
        for name in self.defines:
            if name in self.params or name in self.fits:
                self.err(self.defines[name].pos, f"`{name}` is both a definition and a parameter or fitted name")

    def rules(self) -> None:
        earlier = Coverage()
        for r in self.rf.rules:
            self.rule(r)
            assert r.match is not None
            if not possible_kinds(r.match):
                self.err(
                    r.match.pos,
                    f"this rule can never match: `{format_selector(r.match)}` selects no op kind",
                    None,
                    severity="warning",
                )
            elif earlier.shadowed(r.match):
                self.err(
                    r.match.pos,
                    "this rule can never match: earlier rules already match every node it selects",
                    "rules are tried in order; move it up or narrow the earlier selectors",
                    severity="warning",
                )
            earlier.add(r.match)
        if self.rf.default is not None:
            self.rule(self.rf.default, is_default=True)

    def rule(self, r: Rule, is_default: bool = False) -> None:
        scope = self.scope("rule", r.match, is_default)
        for _, b in r.relevance:
            self.block(b, scope)
        fscope = self.scope("forward", r.match, is_default)
        for _, e in r.forward:
            self.expr(e, fscope)

    def summary_(self) -> None:
        """`summary:` is required of library files; a user's own file without one gets a warning."""
        if self.rf.summary:
            return
        from . import library

        path = Path(self.rf.path).resolve() if self.rf.path else None
        in_library = path is not None and any(path.parent == d.resolve() for d in library.rules_dirs())
        self.err(
            Pos(1, 1, self.rf.path),
            "missing `summary:`",
            "add a one-line `summary:` of the method" + (" (required in the library)" if in_library else ""),
            severity="error" if in_library else "warning",
        )

    def run(self) -> list[RuleError]:
        self.summary_()
        self.defines_()
        for f in self.rf.fit:
            if f.name in self.params:
                self.err(f.pos, f"fitted `{f.name}` has the name of a parameter")
        for s in self.rf.streams:
            if s in self.params or s in self.defines:
                self.err(None, f"stream `{s}` has the name of a parameter or definition")
        init = self.scope("init")
        for _, b in self.rf.init:
            self.block(b, init)
        self.block(self.rf.final, self.scope("final"))
        self.rules()
        return self.problems


def check(rf: RuleFile) -> list[RuleError]:
    """Every semantic error and warning of a loaded file (`severity` says which), in the order found."""
    return _Checker(rf).run()


def warnings(rf: RuleFile) -> list[RuleError]:
    return [p for p in check(rf) if p.severity == "warning"]


__all__ = ["check", "warnings", "Scope"]

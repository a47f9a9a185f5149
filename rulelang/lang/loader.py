"""Rule files -> `RuleFile`: read the YAML, parse every expression with file positions, resolve `extend:`,
bind parameters (keyword overrides), evaluate `require:`, normalise streams, and run the semantic checks.

    rf = load("lrp-epsilon", eps=1e-3)      # a library name, or a path to a .yaml file
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import RuleError
from . import library
from .ast import DEFAULT_STREAM, Binary, Block, Expr, Fit, Name, Pos, Rule, RuleFile, Selector
from .diagnostics import did_you_mean, remember_lines
from .params import bind_params, check_requires
from .parser import parse_block, parse_expr, parse_selector
from .yamlsource import YamlSource

VERSION = 1
TOP_KEYS = [
    "rulelang",
    "name",
    "summary",
    "references",
    "params",
    "require",
    "define",
    "extend",
    "init",
    "final",
    "reference",
    "fit",
    "streams",
    "rules",
    "default",
    "conserves",
]
RULE_KEYS = ["match", "relevance", "forward"]
REFERENCES = ["zeros", "input", "blur"]
ESTIMATORS = ["linear", "relu"]
RESERVED = {"x", "y", "R", "w", "b", "i", "x0", "y0", "target"}
#: `init:` when a file gives none (LRP-type seed); gradient-type files write `init: target`.
DEFAULT_INIT = Block((), Binary("*", Name("y"), Name("target")))
DEFAULT_FINAL = Block((), Name(DEFAULT_STREAM))

Body = Block | dict  # a Block, or {stream: (Block, Pos)} before streams are known


@dataclass
class _RawRule:
    match: Selector | None
    relevance: Body
    forward: tuple[tuple[str, Expr], ...]
    pos: Pos


@dataclass
class _Raw:
    """One file as written (before `extend:` is resolved)."""

    path: Path
    src: YamlSource
    root_pos: Pos
    name: str = ""
    summary: str = ""
    references: list[str] = field(default_factory=list)
    params: dict[str, tuple[Any, Pos]] = field(default_factory=dict)
    require: list[Expr] = field(default_factory=list)
    define: dict[str, Expr] = field(default_factory=dict)
    extend: tuple[str, yaml.Node] | None = None
    init: tuple[Body, Pos] | None = None
    final: Block | None = None
    reference: str | None = None
    fit: dict[str, Fit] = field(default_factory=dict)
    streams: tuple[tuple[str, ...], yaml.Node] | None = None
    rules: list[_RawRule] = field(default_factory=list)
    default: _RawRule | None = None
    conserves: bool | None = None


# ------------------------------------------------------------------------------------------- one file
def _body(src: YamlSource, node: yaml.Node, what: str) -> Body:
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key, (knode, vnode) in src.mapping(node, what).items():
            out[key] = (_block(src, vnode, f"{what} for stream `{key}`"), src.pos(knode))
        if not out:
            raise src.fail(node, f"{what} is empty")
        return out
    return _block(src, node, what)


def _block(src: YamlSource, node: yaml.Node, what: str) -> Block:
    return parse_block(src.text_of(node, what).value, located=src.located(node))


def _expr(src: YamlSource, node: yaml.Node, what: str) -> Expr:
    return parse_expr(src.text_of(node, what).value, located=src.located(node))


def _selector(src: YamlSource, node: yaml.Node, what: str) -> Selector:
    return parse_selector(src.text_of(node, what).value, located=src.located(node))


def _identifier(src: YamlSource, knode: yaml.Node, what: str) -> str:
    key = knode.value
    if not key.isidentifier() or not key.isascii():
        raise src.fail(knode, f"{what} `{key}` is not a valid name", "names are letters, digits and `_`")
    if key in RESERVED:
        raise src.fail(
            knode, f"{what} `{key}` clashes with a built-in name", "reserved names: " + ", ".join(sorted(RESERVED))
        )
    return key


def _rule(src: YamlSource, node: yaml.Node, what: str, is_default: bool = False) -> _RawRule:
    if is_default and not isinstance(node, yaml.MappingNode):
        return _RawRule(None, _body(src, node, "`default:` body"), (), src.pos(node))
    keys = RULE_KEYS[1:] if is_default else RULE_KEYS
    m = src.mapping(node, what, keys)
    for key in keys[:-1]:
        if key not in m:
            raise src.fail(
                node, f"{what} has no `{key}:`", f"a rule needs {' and '.join(f'`{k}:`' for k in keys[:-1])}"
            )
    match = None if is_default else _selector(src, m["match"][1], "`match:`")
    relevance = _body(src, m["relevance"][1], "`relevance:`")
    forward: list[tuple[str, Expr]] = []
    if "forward" in m:
        for key, (kn, vn) in src.mapping(m["forward"][1], "`forward:`").items():
            if key in ("pos", "neg", "abs"):
                raise src.fail(kn, f"forward quantity `{key}` clashes with the attribute `.{key}`")
            forward.append((_identifier(src, kn, "forward quantity"), _expr(src, vn, f"forward `{key}`")))
    return _RawRule(match, relevance, tuple(forward), src.pos(node))


_CACHE: dict[tuple[str, int, int], _Raw] = {}


def _read(path: Path) -> _Raw:
    """Read one file (cached by path, modification time and size: a shared parent is parsed once)."""
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        remember_lines(str(path), _CACHE[key].src.lines)
        return _CACHE[key]
    raw = _read_uncached(path)
    if key is not None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = raw
    return raw


def _read_uncached(path: Path) -> _Raw:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuleError(
            f"cannot read rule file: {e.strerror if isinstance(e, OSError) else e}", path=str(path)
        ) from None
    src = YamlSource(text, str(path))
    remember_lines(str(path), src.lines)
    if src.root is None or (isinstance(src.root, yaml.ScalarNode) and not src.root.value.strip()):
        raise src.error("empty rule file", 1, 1, "a rule file starts with `rulelang: 1`, `summary:` and `rules:`")
    top = src.mapping(src.root, "a rule file", TOP_KEYS)
    raw = _Raw(path, src, src.pos(src.root), name=path.stem)
    if "rulelang" not in top:
        raise src.error("missing `rulelang:` (the language version)", 1, 1, "add `rulelang: 1` at the top")
    vnode = top["rulelang"][1]
    if src.integer(vnode, "`rulelang:`") != VERSION:
        raise src.fail(vnode, f"unsupported rulelang version {vnode.value}", f"this rulelang reads version {VERSION}")
    if "summary" not in top:
        raise src.error("missing `summary:`", 1, 1, "add a one-line `summary:` of the method")
    raw.summary = src.string(top["summary"][1], "`summary:`")
    if "name" in top:
        raw.name = src.string(top["name"][1], "`name:`")
    if "references" in top:
        raw.references = [src.string(n, "a reference") for n in src.sequence(top["references"][1], "`references:`")]
    if "params" in top:
        for _key, (kn, vn) in src.mapping(top["params"][1], "`params:`").items():
            name = _identifier(src, kn, "parameter")
            if isinstance(vn, yaml.SequenceNode):
                values = [src.number(n, f"parameter `{name}`") for n in vn.value]
                if not values:
                    raise src.fail(vn, f"parameter `{name}` is an empty list")
                value: Any = tuple(values)
            else:
                value = src.number(vn, f"parameter `{name}`")
            if any(not math.isfinite(v) for v in (value if isinstance(value, tuple) else (value,))):
                raise src.fail(vn, f"parameter `{name}` must be finite")
            raw.params[name] = (value, src.content_pos(vn))
    if "require" in top:
        raw.require = [_expr(src, n, "a requirement") for n in src.sequence(top["require"][1], "`require:`")]
    if "define" in top:
        for key, (kn, vn) in src.mapping(top["define"][1], "`define:`").items():
            raw.define[_identifier(src, kn, "definition")] = _expr(src, vn, f"definition `{key}`")
    if "extend" in top:
        raw.extend = (src.string(top["extend"][1], "`extend:`"), top["extend"][1])
    if "streams" in top:
        snode = top["streams"][1]
        names = [src.string(n, "a stream name") for n in src.sequence(snode, "`streams:`")]
        for n in src.sequence(snode, "`streams:`"):
            if n.value in RESERVED - {DEFAULT_STREAM} or not n.value.isidentifier():
                raise src.fail(n, f"stream name `{n.value}` is not allowed", "use a new name like `mp`")
        if not names or len(set(names)) != len(names):
            raise src.fail(snode, "`streams:` must list distinct names", content=True)
        raw.streams = (tuple(names), snode)
    if "init" in top:
        raw.init = (_body(src, top["init"][1], "`init:`"), src.pos(top["init"][0]))
    if "final" in top:
        raw.final = _block(src, top["final"][1], "`final:`")
    if "reference" in top:
        ref = src.string(top["reference"][1], "`reference:`")
        if ref not in REFERENCES:
            raise src.fail(
                top["reference"][1],
                f"unknown reference `{ref}`",
                did_you_mean(ref, REFERENCES) or "one of: " + ", ".join(REFERENCES),
                content=True,
            )
        raw.reference = ref
    if "fit" in top:
        for key, (kn, vn) in src.mapping(top["fit"][1], "`fit:`").items():
            name = _identifier(src, kn, "fitted statistic")
            spec = src.mapping(vn, f"`fit:` entry `{key}`", ["estimator", "match"])
            if "estimator" not in spec:
                raise src.fail(vn, f"`fit:` entry `{key}` has no `estimator:`", "one of: " + ", ".join(ESTIMATORS))
            est_node = spec["estimator"][1]
            est = src.string(est_node, "`estimator:`")
            if est not in ESTIMATORS:
                raise src.fail(
                    est_node,
                    f"unknown estimator `{est}`",
                    did_you_mean(est, ESTIMATORS) or "one of: " + ", ".join(ESTIMATORS),
                    content=True,
                )
            match = _selector(src, spec["match"][1], "`match:`") if "match" in spec else None
            raw.fit[name] = Fit(name, est, match, src.pos(kn))
    if "rules" in top:
        items = src.sequence(top["rules"][1], "`rules:`")
        raw.rules = [_rule(src, n, f"rule {k + 1}") for k, n in enumerate(items)]
    if "default" in top:
        raw.default = _rule(src, top["default"][1], "`default:`", is_default=True)
    if "conserves" in top:
        node = top["conserves"][1]
        value = src.string(node, "`conserves:`")
        if value not in ("true", "false"):
            raise src.fail(node, "`conserves:` must be `true` or `false`", content=True)
        raw.conserves = value == "true"
    return raw


# ---------------------------------------------------------------------------------------- extend chain
def _resolve_extend(child: _Raw) -> Path:
    value, node = child.extend  # type: ignore[misc]
    if library.looks_like_path(value):
        target = (child.path.parent / value).resolve()
        if not target.is_file():
            raise child.src.fail(node, f"`extend:` file not found: {value}", f"looked for {target}", content=True)
        return target
    for suffix in library.SUFFIXES:
        sibling = child.path.parent / f"{value}{suffix}"
        if sibling.is_file():
            return sibling.resolve()
    try:
        return library.find_rule(value).resolve()
    except RuleError as e:
        raise child.src.fail(node, f"`extend:` names an unknown rule file `{value}`", e.hint, content=True) from None


def _chain(path: Path) -> list[_Raw]:
    chain = [_read(path)]
    seen = [path.resolve()]
    while chain[-1].extend is not None:
        parent = _resolve_extend(chain[-1])
        if parent in seen:
            names = " -> ".join(p.name for p in seen + [parent])
            raise chain[-1].src.fail(chain[-1].extend[1], f"`extend:` cycle: {names}", content=True)
        seen.append(parent)
        chain.append(_read(parent))
    return chain


def _streams_of(chain: list[_Raw]) -> tuple[str, ...]:
    declared = [r for r in chain if r.streams is not None]
    if not declared:
        return (DEFAULT_STREAM,)
    first = declared[0].streams[0]  # type: ignore[index]
    for r in declared[1:]:
        if r.streams[0] != first:  # type: ignore[index]
            src, node = declared[0].src, declared[0].streams[1]  # type: ignore[index]
            raise src.fail(
                node,
                f"`streams:` {list(first)} differ from {list(r.streams[0])} "  # type: ignore[index]
                f"in the extended file {r.path.name}",
            )
    return first


def _per_stream(
    body: Body, streams: tuple[str, ...], src: YamlSource, where: Pos, what: str
) -> tuple[tuple[str, Block], ...]:
    if isinstance(body, Block):
        return tuple((s, body) for s in streams)
    for key, (_, kpos) in body.items():
        if key not in streams:
            raise src.error(
                f"{what} names unknown stream `{key}`",
                kpos.line,
                kpos.col,
                did_you_mean(key, streams) or "streams: " + ", ".join(streams),
            )
    missing = [s for s in streams if s not in body]
    if missing:
        raise src.error(
            f"{what} gives no body for stream `{missing[0]}`",
            where.line,
            where.col,
            "give a body for every stream, or one plain body used for all",
        )
    return tuple((s, body[s][0]) for s in streams)


def _norm_rule(r: _RawRule, streams: tuple[str, ...], src: YamlSource) -> Rule:
    return Rule(r.match, _per_stream(r.relevance, streams, src, r.pos, "`relevance:`"), r.forward, r.pos)


def _merge(chain: list[_Raw], overrides: dict[str, Any]) -> RuleFile:
    child = chain[0]
    streams = _streams_of(chain)
    params: dict[str, tuple[Any, Pos]] = {}
    define: dict[str, Expr] = {}
    fit: dict[str, Fit] = {}
    for r in reversed(chain):
        params.update(r.params)
        define.update(r.define)
        fit.update(r.fit)
    references: list[str] = []
    for r in chain:
        references += [x for x in r.references if x not in references]
    first = lambda attr: next((r for r in chain if getattr(r, attr) is not None), None)  # noqa: E731
    init_raw, final_raw = first("init"), first("final")
    ref_raw, default_raw = first("reference"), first("default")
    conserves_raw = first("conserves")
    if init_raw is not None:
        init = _per_stream(init_raw.init[0], streams, init_raw.src, init_raw.init[1], "`init:`")  # type: ignore[index]
    else:
        init = tuple((s, DEFAULT_INIT) for s in streams)
    if final_raw is not None:
        final = final_raw.final
    elif streams == (DEFAULT_STREAM,):
        final = DEFAULT_FINAL
    else:
        raise child.src.error(
            "a file with several `streams:` must give `final:`",
            1,
            1,
            "e.g. `final: (x - x0) * (" + " + ".join(streams) + ") / 2`",
        )
    rules = [_norm_rule(r, streams, src.src) for src in chain for r in src.rules]
    default = _norm_rule(default_raw.default, streams, default_raw.src) if default_raw else None  # type: ignore[arg-type]
    if not rules and default is None:
        raise child.src.error("the file has no rules", 1, 1, "give `rules:` (a list) or a `default:` body")
    bound = bind_params(params, overrides, child.name, str(child.path))
    requires = [e for r in chain for e in r.require]
    check_requires(requires, bound)
    return RuleFile(
        name=child.name,
        summary=child.summary,
        version=VERSION,
        references=tuple(references),
        params=tuple(bound.items()),
        require=tuple(requires),
        define=tuple(define.items()),
        streams=streams,
        init=init,
        final=final,
        rules=tuple(rules),
        default=default,
        reference=ref_raw.reference if ref_raw else None,
        conserves=bool(conserves_raw.conserves) if conserves_raw else False,
        fit=tuple(fit.values()),
        extends=tuple(str(r.path) for r in chain[1:]),
        path=str(child.path),
    )


# ---------------------------------------------------------------------------------------------- public
def resolve_path(name_or_path: str | Path) -> Path:
    """A library name or a file path -> the file's path (RuleError if there is none)."""
    if library.looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise RuleError(f"rule file not found: {path}", hint="give a path to a .yaml file or a library name")
        return path
    return library.find_rule(str(name_or_path))


def load_unchecked(name_or_path: str | Path, **params: Any) -> RuleFile:
    """Read, resolve `extend:`, bind parameters and check `require:`, without the semantic checks."""
    return _merge(_chain(resolve_path(name_or_path)), params)


def load(name_or_path: str | Path, **params: Any) -> RuleFile:
    """Load a rule file by library name or path, with parameters overridden by keyword.

    Raises the first `RuleError` (syntax, structure, unknown names, arity, `require:` ...); warnings are
    not raised (see `checker.check`).
    """
    from .checker import check  # the checker imports nothing from here at import time

    rf = load_unchecked(name_or_path, **params)
    for problem in check(rf):
        if problem.severity == "error":
            raise problem
    return rf

"""Rule files -> `RuleFile`: read the YAML, parse every expression with file positions, resolve `extend:`,
bind parameters (keyword overrides), evaluate `require:`, normalise streams, and run the semantic checks.

    rf = load("lrp-epsilon", eps=1e-3)      # a library name, or a path to a .yaml file
"""

from __future__ import annotations

import gc
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import RuleError
from . import library
from .ast import DEFAULT_STREAM, Binary, Block, Expr, Fit, Name, Pos, Rule, RuleFile, Selector
from .checker import check
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


# ----------------------------------------------------------------------------------- one reader per key
#: A reader takes the file, the key's (key node, value node) and fills its part of the `_Raw`.
Reader = Callable[[YamlSource, yaml.Node, yaml.Node, _Raw], None]
#: top-level key -> its reader, in the order the keys are read (so the first error reported is stable).
READERS: dict[str, Reader] = {}


def _reads(key: str) -> Callable[[Reader], Reader]:
    def register(f: Reader) -> Reader:
        READERS[key] = f
        return f

    return register


@_reads("rulelang")
def _read_version(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    if src.integer(vnode, "`rulelang:`") != VERSION:
        raise src.fail(vnode, f"unsupported rulelang version {vnode.value}", f"this rulelang reads version {VERSION}")


@_reads("summary")
def _read_summary(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.summary = src.string(vnode, "`summary:`")


@_reads("name")
def _read_name(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.name = src.string(vnode, "`name:`")


@_reads("references")
def _read_references(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.references = [src.string(n, "a reference") for n in src.sequence(vnode, "`references:`")]


@_reads("params")
def _read_params(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    for _key, (kn, vn) in src.mapping(vnode, "`params:`").items():
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


@_reads("require")
def _read_require(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.require = [_expr(src, n, "a requirement") for n in src.sequence(vnode, "`require:`")]


@_reads("define")
def _read_define(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    for key, (kn, vn) in src.mapping(vnode, "`define:`").items():
        raw.define[_identifier(src, kn, "definition")] = _expr(src, vn, f"definition `{key}`")


@_reads("extend")
def _read_extend(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.extend = (src.string(vnode, "`extend:`"), vnode)


@_reads("streams")
def _read_streams(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    items = src.sequence(vnode, "`streams:`")
    names = [src.string(n, "a stream name") for n in items]
    for n in items:
        if n.value in RESERVED - {DEFAULT_STREAM} or not n.value.isidentifier():
            raise src.fail(n, f"stream name `{n.value}` is not allowed", "use a new name like `mp`")
    if not names or len(set(names)) != len(names):
        raise src.fail(vnode, "`streams:` must list distinct names", content=True)
    raw.streams = (tuple(names), vnode)


@_reads("init")
def _read_init(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.init = (_body(src, vnode, "`init:`"), src.pos(knode))


@_reads("final")
def _read_final(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.final = _block(src, vnode, "`final:`")


def _choice(src: YamlSource, node: yaml.Node, what: str, noun: str, choices: list[str]) -> str:
    value = src.string(node, what)
    if value not in choices:
        hint = did_you_mean(value, choices) or "one of: " + ", ".join(choices)
        raise src.fail(node, f"unknown {noun} `{value}`", hint, content=True)
    return value


@_reads("reference")
def _read_reference(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.reference = _choice(src, vnode, "`reference:`", "reference", REFERENCES)


@_reads("fit")
def _read_fit(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    for key, (kn, vn) in src.mapping(vnode, "`fit:`").items():
        name = _identifier(src, kn, "fitted statistic")
        spec = src.mapping(vn, f"`fit:` entry `{key}`", ["estimator", "match"])
        if "estimator" not in spec:
            raise src.fail(vn, f"`fit:` entry `{key}` has no `estimator:`", "one of: " + ", ".join(ESTIMATORS))
        est = _choice(src, spec["estimator"][1], "`estimator:`", "estimator", ESTIMATORS)
        match = _selector(src, spec["match"][1], "`match:`") if "match" in spec else None
        raw.fit[name] = Fit(name, est, match, src.pos(kn))


@_reads("rules")
def _read_rules(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.rules = [_rule(src, n, f"rule {k + 1}") for k, n in enumerate(src.sequence(vnode, "`rules:`"))]


@_reads("default")
def _read_default(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    raw.default = _rule(src, vnode, "`default:`", is_default=True)


@_reads("conserves")
def _read_conserves(src: YamlSource, knode: yaml.Node, vnode: yaml.Node, raw: _Raw) -> None:
    value = src.string(vnode, "`conserves:`")
    if value not in ("true", "false"):
        raise src.fail(vnode, "`conserves:` must be `true` or `false`", content=True)
    raw.conserves = value == "true"


# ---------------------------------------------------------------------------------------- one file
#: A rule file has a top-level `rulelang:` key; a file without one is never parsed further nor echoed.
_RULE_FILE = re.compile(r"""^[ \t]*\{?[ \t]*["']?rulelang["']?[ \t]*:""", re.M)

_CACHE: dict[tuple[str, int, int], _Raw] = {}


def _read(path: Path, via: tuple[YamlSource, yaml.Node] | None = None) -> _Raw:
    """Read one file (cached by path, modification time and size: a shared parent is parsed once).

    `via`: the extending file and its `extend:` node, where errors about a file that cannot be read or is not a
    rule file are reported (without any of that file's content).
    """
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        remember_lines(str(path), _CACHE[key].src.lines)
        return _CACHE[key]
    raw = _read_uncached(path, via)
    if key is not None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = raw
    return raw


#: Larger files are refused unread (a 20,000-rule file is about 1 MB).
MAX_FILE_BYTES = 64 * 2**20


def _read_text(path: Path, via: tuple[YamlSource, yaml.Node] | None) -> str:
    text = None
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            problem = f"it is larger than {MAX_FILE_BYTES // 2**20} MB, too large for a rule file"
        else:
            text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text"
    except OSError as e:
        problem = e.strerror or type(e).__name__
    if text is not None:
        if via is None and not any(s.strip() and not s.lstrip().startswith("#") for s in text.split("\n")):
            raise RuleError(
                "empty rule file",
                path=str(path),
                line=1,
                col=1,
                hint="a rule file starts with `rulelang: 1`, `summary:` and `rules:`",
            )
        if _RULE_FILE.search(text):
            return text
        if via is None:
            raise RuleError(
                "missing `rulelang:` (the language version): this is not a rule file",
                path=str(path),
                line=1,
                col=1,
                hint="a rule file starts with `rulelang: 1`, `summary:` and `rules:`",
            )
        problem = "it is not a rule file (no top-level `rulelang:` key)"
    if via is None:
        raise RuleError(f"cannot read rule file: {problem}", path=str(path))
    src, node = via
    raise src.fail(node, f"`extend:` cannot use {path.name}: {problem}", content=True)


def _read_uncached(path: Path, via: tuple[YamlSource, yaml.Node] | None = None) -> _Raw:
    src = YamlSource(_read_text(path, via), str(path))
    remember_lines(str(path), src.lines)
    if src.root is None or (isinstance(src.root, yaml.ScalarNode) and not src.root.value.strip()):
        raise src.error("empty rule file", 1, 1, "a rule file starts with `rulelang: 1`, `summary:` and `rules:`")
    top = src.mapping(src.root, "a rule file", TOP_KEYS)
    if "rulelang" not in top:
        raise src.error("missing `rulelang:` (the language version)", 1, 1, "add `rulelang: 1` at the top")
    raw = _Raw(path, src, src.pos(src.root), name=path.stem)
    for key, reader in READERS.items():
        if key in top:
            reader(src, *top[key], raw)
    return raw


# ---------------------------------------------------------------------------------------- rule path
def _env_path() -> list[Path]:
    return [Path(p) for p in os.environ.get("RULELANG_PATH", "").split(os.pathsep) if p.strip()]


def rule_path(top: Path, search_path: Sequence[str | Path] = ()) -> list[Path]:
    """The folders `extend:` may read from when loading `top`: its own folder tree, the folders the caller
    adds (`search_path`, then `$RULELANG_PATH`), and the library. Symlinks resolved."""
    roots = [top.parent.resolve(), top.resolve().parent]
    roots += [Path(p).expanduser().resolve() for p in [*search_path, *_env_path()]]
    roots += [d.resolve() for d in library.rules_dirs()]
    return list(dict.fromkeys(roots))


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def _resolve_extend(child: _Raw, roots: Sequence[Path], extra: Sequence[Path]) -> Path:
    value, node = child.extend  # type: ignore[misc]
    src = child.src
    outside = (
        "`extend:` reads only the extending file's folder tree, the library, and folders added with "
        "`load(..., search_path=[...])` or $RULELANG_PATH"
    )
    if library.looks_like_path(value):
        if "\x00" in value:
            raise src.fail(node, "`extend:` path contains a NUL character", content=True)
        target = (child.path.parent / Path(value).expanduser()).resolve()
        if not _inside(target, roots):
            raise src.fail(node, f"`extend:` path {value} is outside the rule path", outside, content=True)
        if not target.is_file():
            raise src.fail(node, f"`extend:` file not found: {value}", f"looked for {target}", content=True)
        return target
    for folder in [child.path.parent, *extra]:
        for suffix in library.SUFFIXES:
            candidate = folder / f"{value}{suffix}"
            if candidate.is_file():
                target = candidate.resolve()
                if not _inside(target, roots):
                    raise src.fail(node, f"`extend:` {value} links outside the rule path", outside, content=True)
                return target
    try:
        return library.find_rule(value).resolve()
    except RuleError as e:
        raise src.fail(node, f"`extend:` names an unknown rule file `{value}`", e.hint, content=True) from None


def _chain(path: Path, search_path: Sequence[str | Path] = ()) -> list[_Raw]:
    roots = rule_path(path, search_path)
    extra = [Path(p).expanduser() for p in [*search_path, *_env_path()]]
    chain = [_read(path)]
    seen = [path.resolve()]
    while chain[-1].extend is not None:
        parent = _resolve_extend(chain[-1], roots, extra)
        if parent in seen:
            names = " -> ".join(p.name for p in seen + [parent])
            raise chain[-1].src.fail(chain[-1].extend[1], f"`extend:` cycle: {names}", content=True)
        seen.append(parent)
        chain.append(_read(parent, via=(chain[-1].src, chain[-1].extend[1])))
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
        final=final,  # type: ignore[arg-type]  # first("final") is a file that gives one
        rules=tuple(rules),
        default=default,
        reference=ref_raw.reference if ref_raw else None,
        conserves=bool(conserves_raw.conserves) if conserves_raw else False,
        fit=tuple(fit.values()),
        extends=tuple(str(r.path) for r in chain[1:]),
        path=str(child.path),
    )


# ---------------------------------------------------------------------------------------------- public
def resolve_path(name_or_path: str | Path, search_path: Sequence[str | Path] = ()) -> Path:
    """A library name or a file path -> the file's path (RuleError if there is none).

    A name is looked up in `search_path`, then `$RULELANG_PATH`, then the library; a missing `.yaml` path whose
    stem is a library name says so.
    """
    if library.looks_like_path(name_or_path):
        path = Path(name_or_path)
        if path.is_file():
            return path
        stem = path.name.rsplit(".", 1)[0] if path.name.endswith(library.SUFFIXES) else path.name
        names = library.list_rules()
        if stem in names:
            hint = f"did you mean the library rule `{stem}`? (library rules are named without `.yaml`)"
        else:
            hint = did_you_mean(stem, names) or "give a path to a .yaml file or a library name"
            hint = hint.replace("did you mean `", "did you mean the library rule `")
        raise RuleError(f"rule file not found: {path}", hint=hint)
    name = str(name_or_path)
    for folder in [*search_path, *_env_path()]:
        for suffix in library.SUFFIXES:
            candidate = Path(folder).expanduser() / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return library.find_rule(name)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while files are read and checked: the AST is acyclic, and the collector's
    full passes over a growing heap took half the time of checking a 20,000-rule file."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_unchecked(name_or_path: str | Path, *, search_path: Sequence[str | Path] = (), **params: Any) -> RuleFile:
    """Read, resolve `extend:`, bind parameters and check `require:`, without the semantic checks."""
    with gc_paused():
        return _merge(_chain(resolve_path(name_or_path, search_path), search_path), params)


def load(name_or_path: str | Path, *, search_path: Sequence[str | Path] = (), **params: Any) -> RuleFile:
    """Load and check a rule file by library name or path, with parameters overridden by keyword.

    Args:
        name_or_path: a rule library name (``"lrp-epsilon"``, see ``rulelang.lang.library.list_rules()``) or the
            path of a YAML rule file.
        search_path: extra folders where `extend:` (and names) are looked up. `extend:` reads only the loaded
            file's own folder tree, the library, these folders and those in ``$RULELANG_PATH``
            (``os.pathsep``-separated).
        **params: values for the file's ``params:`` (checked against its ``require:``).

    Returns:
        The checked :class:`~rulelang.lang.ast.RuleFile` (``extend:`` resolved, parameters bound).

    Raises:
        RuleError: the first error, at ``file:line:col`` with the source line and a caret (syntax, structure,
            unknown names, arity, a ``require:`` violation, ...). Warnings are not raised (see
            ``rulelang.lang.checker.check``).
    """

    with gc_paused():
        rf = load_unchecked(name_or_path, search_path=search_path, **params)
        problems = check(rf)
    for problem in problems:
        if problem.severity == "error":
            raise problem
    return rf


def check_path(
    name_or_path: str | Path, *, search_path: Sequence[str | Path] = (), **params: Any
) -> tuple[RuleFile | None, list[RuleError]]:
    """Load and check a file, collecting problems instead of raising (for `rulelang check`); `search_path` as
    for `loader.load`."""
    with gc_paused():
        try:
            rf = load_unchecked(name_or_path, search_path=search_path, **params)
        except RuleError as e:
            return None, [e]
        problems = check(rf)
    return (None if any(p.severity == "error" for p in problems) else rf), problems


def check_file(path: str | Path, *, search_path: Sequence[str | Path] = (), **params: Any) -> RuleFile:
    """Load and check a file; raise its first error (warnings: `warnings(rf)`)."""
    rf, problems = check_path(path, search_path=search_path, **params)
    for p in problems:
        if p.severity == "error":
            raise p
    assert rf is not None
    return rf

"""Text -> AST: expressions, bodies (blocks) and selectors, parsed with the Lark grammar in `grammar.lark`.

Every function takes the text plus where it starts in its file (`line`, `col`; later lines of a multi-line
text start at column `col`, as in a YAML block scalar) or a `Located` with an exact per-character map. Every
AST node's `pos` is a file position; syntax errors are `RuleError`s with a human "expected ..." hint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import RuleError
from . import kinds as K
from .ast import (
    And,
    Assign,
    Attr,
    Binary,
    Block,
    Call,
    Expr,
    Index,
    Kind,
    Name,
    NameGlob,
    Not,
    Num,
    Or,
    Pos,
    Position,
    Selector,
    Unary,
)
from .diagnostics import Located, did_you_mean

GRAMMAR = Path(__file__).with_name("grammar.lark")


@lru_cache(maxsize=1)
def lark_parser() -> Lark:
    """The LALR parser (built once; start symbols `expr_start`, `stmt_start`, `sel_start`)."""
    return Lark(
        GRAMMAR.read_text(),
        parser="lalr",
        start=["expr_start", "stmt_start", "sel_start"],
        propagate_positions=True,
        maybe_placeholders=True,
    )


# --------------------------------------------------------------------------------------------- transformer
class _Kw:
    __slots__ = ("name", "value", "offset")

    def __init__(self, name: str, value: Expr, offset: int) -> None:
        self.name, self.value, self.offset = name, value, offset


@v_args(meta=True)
class _ToAst(Transformer):
    """Lark tree -> AST dataclasses, with file positions (`base`: offset of the parsed piece in `loc.text`)."""

    def __init__(self, loc: Located, base: int) -> None:
        super().__init__()
        self.loc, self.base = loc, base

    def _pos(self, meta):
        return self.loc.pos(self.base + meta.start_pos, self.base + meta.end_pos)

    def _err(self, message: str, offset: int, hint: str | None = None) -> RuleError:
        return self.loc.error(message, self.base + offset, hint)

    # expressions
    def number(self, meta, ch):
        value = float(ch[0])
        if math.isinf(value):
            raise self._err(f"number `{ch[0]}` is too large", ch[0].start_pos)
        return Num(value, self._pos(meta))

    def name(self, meta, ch):
        return Name(str(ch[0]), self._pos(meta))

    def binary(self, meta, ch):
        return Binary(str(ch[1]), ch[0], ch[2], self._pos(meta))

    def unary(self, meta, ch):
        return Unary(str(ch[0]), ch[1], self._pos(meta))

    def attr(self, meta, ch):
        return Attr(ch[0], str(ch[1]), self._pos(meta))

    def index(self, meta, ch):
        return Index(ch[0], ch[1], self._pos(meta))

    def kwarg(self, meta, ch):
        return _Kw(str(ch[0]), ch[1], ch[0].start_pos)

    def args(self, meta, ch):
        return list(ch)

    def call(self, meta, ch):
        args: list[Expr] = []
        kwargs: list[tuple[str, Expr]] = []
        for a in ch[1] or []:
            if isinstance(a, _Kw):
                if a.name in dict(kwargs):
                    raise self._err(f"keyword `{a.name}` given twice", a.offset)
                kwargs.append((a.name, a.value))
            elif kwargs:
                raise self._err(
                    "positional argument after a keyword argument",
                    meta.start_pos if a.pos is None else self._offset_of(a),
                )
            else:
                args.append(a)
        return Call(str(ch[0]), tuple(args), tuple(kwargs), self._pos(meta))

    def _offset_of(self, e: Expr) -> int:
        # position -> offset is not needed elsewhere; search the points for the node's start
        assert e.pos is not None
        for off in range(len(self.loc.text) + 1):
            if self.loc.linecol(off) == (e.pos.line, e.pos.col):
                return off - self.base
        return 0

    # statements
    def assign(self, meta, ch):
        return Assign(str(ch[0]), ch[1], self._pos(meta))

    def bare(self, meta, ch):
        return ch[0]

    # selectors
    def sel_word(self, meta, ch):
        word = str(ch[0])
        if word in K.POSITIONS:
            return Position(word, self._pos(meta))
        try:
            K.expand(word)
        except KeyError:
            raise self._err(
                f"unknown op kind `{word}` in selector",
                ch[0].start_pos,
                did_you_mean(word, K.selector_words() + ["name"])
                or "selectors use op kinds (" + ", ".join(K.selector_words()) + ') and `name("glob")`',
            ) from None
        return Kind(word, self._pos(meta))

    def sel_call(self, meta, ch):
        if str(ch[0]) != "name":
            raise self._err(
                f"unknown selector function `{ch[0]}`", ch[0].start_pos, 'the only selector function is `name("glob")`'
            )
        return NameGlob(str(ch[1])[1:-1], self._pos(meta))

    def sel_or(self, meta, ch):
        return Or(ch[0], ch[2], self._pos(meta))

    def sel_and(self, meta, ch):
        return And(ch[0], ch[2], self._pos(meta))

    def sel_not(self, meta, ch):
        return Not(ch[1], self._pos(meta))


# ------------------------------------------------------------------------------------------ syntax errors
_STARTERS = {"NAME", "NUMBER", "_LPAR", "MINUS", "PLUS", "TILDE"}
_OPERATORS = {"BAR", "AMP", "CMP_OP", "PLUS", "MINUS", "STAR", "SLASH", "POW"}
_SHOW = {
    "_RPAR": "`)`",
    "_RSQB": "`]`",
    "_COMMA": "`,`",
    "_EQUAL": "`=`",
    "_LPAR": "`(`",
    "_DOT": "`.`",
    "_LSQB": "`[`",
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a quoted pattern like "fc*"',
    "CMP_OP": "a comparison",
    "POW": "`**`",
    "STAR": "`*`",
    "SLASH": "`/`",
    "PLUS": "`+`",
    "MINUS": "`-`",
    "TILDE": "`~`",
    "AMP": "`&`",
    "BAR": "`|`",
    "$END": "the end of the text",
}
_CHAR_HINTS = {
    "^": "use `**` for powers",
    "!": "use `~` for not (and `!=` for not-equal)",
    "'": 'strings are only used in `name("...")` selectors',
    '"': 'strings are only used in `name("...")` selectors',
    ":": "bodies use `name = expr` lines, not `:`",
    ";": "put each statement on its own line",
}


def _expected(names: set[str], what: str) -> str:
    names = set(names)
    parts: list[str] = []
    if {"NAME", "NUMBER"} <= names:
        parts.append(f"an {what}" if what == "expression" else f"a {what}")
        names -= _STARTERS
    elif what == "selector" and "NAME" in names:
        parts.append('an op kind, `first`, `last` or `name("glob")`')
        names -= {"NAME", "TILDE", "_LPAR"}
    if len(names & _OPERATORS) >= 4:
        parts.append("an operator")
        names -= _OPERATORS | {"_DOT", "_LSQB", "_LPAR"}
    parts += sorted(_SHOW.get(n, n) for n in names if n != "$END")
    if "$END" in names:
        parts.append(_SHOW["$END"])
    if not parts:
        return ""
    return "expected " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1])


def _syntax_error(e: UnexpectedInput, loc: Located, base: int, piece: str, what: str) -> RuleError:
    if isinstance(e, UnexpectedCharacters):
        at = e.pos_in_stream or 0
        ch = piece[at]
        hint = _CHAR_HINTS.get(ch) or _expected(set(e.allowed or ()), what) or None
        return loc.error(f"unexpected character `{ch}`", base + at, hint)
    if isinstance(e, UnexpectedToken):
        expected = set(getattr(e, "accepts", None) or e.expected)
        hint = _expected(expected, what) or None
        if e.token.type == "$END":
            stripped = _strip_comments(piece).rstrip()
            return loc.error(f"unexpected end of {what}", base + len(stripped), hint)
        tok = e.token
        if (
            tok.type == "NAME"
            and piece[tok.end_pos :].lstrip().startswith("(") is False
            and tok.value in {"and", "or", "not"}
        ):
            hint = f"use `{ {'and': '&', 'or': '|', 'not': '~'}[tok.value] }` instead of `{tok.value}`"
        return loc.error(f"unexpected `{tok.value}`", base + tok.start_pos, hint)
    return loc.error(f"syntax error in {what}", base + (getattr(e, "pos_in_stream", 0) or 0))


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.split("\n"))


#: The deepest nesting an expression or selector may have (operators, calls, attributes, brackets): far beyond
#: any real rule, and shallow enough that every recursive pass over the AST (checker, printer, compiler) is safe.
MAX_DEPTH = 100


def _too_deep(tree: Tree) -> int | None:
    """The offset (in the parsed piece) of the first subtree nested deeper than `MAX_DEPTH`, or None (iterative,
    so any depth is measured safely before the recursive transformer runs)."""
    stack: list[tuple[Tree | Token, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        if depth > MAX_DEPTH:
            return node.meta.start_pos if not node.meta.empty else 0
        stack.extend((c, depth + 1) for c in reversed(node.children))  # leftmost first
    return None


def _parse(loc: Located, start: int, end: int, rule: str, what: str):
    piece = loc.text[start:end]
    try:
        tree = lark_parser().parse(piece, start=rule)
    except UnexpectedInput as e:
        raise _syntax_error(e, loc, start, piece, what) from None
    except RecursionError:  # not expected of the LALR parser; kept as a backstop
        raise loc.error(f"{what} too deep", start, "split it into named steps (`a = ...` lines)") from None
    offset = _too_deep(tree)
    if offset is not None:
        raise loc.error(
            f"{what} too deep: more than {MAX_DEPTH} levels of nesting",
            start + offset,
            "split it into named steps (`a = ...` lines)",
        )
    try:
        return _ToAst(loc, start).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, RuleError):
            raise e.orig_exc from None
        raise


class _Offsets(Located):
    """A `Located` whose positions are offsets in its text: `Pos(0, start, None, 0, end)` (see `_cached_ast`)."""

    def linecol(self, offset: int) -> tuple[int, int]:
        return 0, offset

    def pos(self, start: int, end: int | None = None) -> Pos:
        return Pos(0, start, None, 0, start if end is None else end)


#: (text, start symbol) -> its AST with offset positions; a large generated file repeats the same few texts.
_ASTS: dict[tuple[str, str], object] = {}


def _cached_ast(loc: Located, start: int, end: int, rule: str, what: str):
    """`_parse`, with the AST of each distinct text built once and then only moved to its file position."""
    piece = loc.text[start:end]
    key = (piece, rule)
    ast = _ASTS.get(key)
    if ast is None:
        try:
            ast = _parse(_Offsets(piece), 0, len(piece), rule, what)
        except RuleError:
            _parse(loc, start, end, rule, what)  # the same error, at its file position
            raise
        if len(_ASTS) > 4096:
            _ASTS.clear()
        _ASTS[key] = ast
    return _relocate(ast, loc, start)


Mover = Callable[[Pos | None], Pos | None]


def _relocate(node, loc: Located, base: int):
    """A copy of an offset-positioned AST with file positions (offset + `base` in `loc`)."""

    def move(p: Pos | None) -> Pos | None:
        return None if p is None else loc.pos(base + p.col, base + p.end_col)  # type: ignore[operator]

    return _move(node, move)


def _move(n, f: Mover):
    return _MOVES[type(n)](n, f)


#: AST class -> how to copy one node with moved positions (one line per node type, no reflection: this runs
#: once per node of every expression of a file)
_MOVES: dict[type, Callable] = {
    Num: lambda n, f: Num(n.value, f(n.pos)),
    Name: lambda n, f: Name(n.id, f(n.pos)),
    Attr: lambda n, f: Attr(_move(n.value, f), n.attr, f(n.pos)),
    Index: lambda n, f: Index(_move(n.value, f), _move(n.index, f), f(n.pos)),
    Call: lambda n, f: Call(
        n.func, tuple([_move(a, f) for a in n.args]), tuple([(k, _move(v, f)) for k, v in n.kwargs]), f(n.pos)
    ),
    Unary: lambda n, f: Unary(n.op, _move(n.operand, f), f(n.pos)),
    Binary: lambda n, f: Binary(n.op, _move(n.left, f), _move(n.right, f), f(n.pos)),
    Assign: lambda n, f: Assign(n.name, _move(n.value, f), f(n.pos)),
    Kind: lambda n, f: Kind(n.name, f(n.pos)),
    Position: lambda n, f: Position(n.which, f(n.pos)),
    NameGlob: lambda n, f: NameGlob(n.pattern, f(n.pos)),
    And: lambda n, f: And(_move(n.left, f), _move(n.right, f), f(n.pos)),
    Or: lambda n, f: Or(_move(n.left, f), _move(n.right, f), f(n.pos)),
    Not: lambda n, f: Not(_move(n.operand, f), f(n.pos)),
}


def _located(text: str, path: str | None, line: int, col: int, located: Located | None) -> Located:
    if located is not None:
        return located
    return Located(text, path=path, line=line, col=col)


# ------------------------------------------------------------------------------------------------- public
def parse_expr(
    text: str, *, path: str | None = None, line: int = 1, col: int = 1, located: Located | None = None
) -> Expr:
    """Parse one expression (may span lines)."""
    loc = _located(text, path, line, col, located)
    if not _strip_comments(loc.text).strip():
        raise loc.error("empty expression", 0, "expected an expression")
    return _cached_ast(loc, 0, len(loc.text), "expr_start", "expression")


def parse_selector(
    text: str, *, path: str | None = None, line: int = 1, col: int = 1, located: Located | None = None
) -> Selector:
    """Parse a `match:` selector: op kinds, `first`, `last`, `name("glob")`, `&`, `|`, `~`, parentheses."""
    loc = _located(text, path, line, col, located)
    if not _strip_comments(loc.text).strip():
        raise loc.error("empty selector", 0, 'expected an op kind, `first`, `last` or `name("glob")`')
    return _simple_selector(loc) or _cached_ast(loc, 0, len(loc.text), "sel_start", "selector")


_SEL_ATOM = r"""(?:name\s*\(\s*(?:"[^"\n]*"|'[^'\n]*')\s*\)|[A-Za-z_][A-Za-z_0-9]*)"""
_SIMPLE_SELECTOR = re.compile(rf"\s*{_SEL_ATOM}(?:\s*([&|])\s*{_SEL_ATOM})?(?:\s*\1\s*{_SEL_ATOM})*\s*")
_SEL_TOKEN = re.compile(rf"{_SEL_ATOM}")


def _simple_selector(loc: Located) -> Selector | None:
    """The common selectors (`relu`, `first & conv`, `name("fc*") & dense`, `a | b | c`: atoms joined by one
    operator) without the parser, the same AST and positions; None for anything else (the parser's job,
    including every error)."""
    text = loc.text
    m = _SIMPLE_SELECTOR.fullmatch(text)
    if m is None:
        return None
    out: Selector | None = None
    for tok in _SEL_TOKEN.finditer(text):
        word = tok.group()
        s, e = tok.span()
        if word.startswith("name") and word.endswith(")"):
            quoted = word[word.index("(") + 1 : word.rindex(")")].strip()
            atom: Selector = NameGlob(quoted[1:-1], loc.pos(s, e))
        elif word in K.POSITIONS:
            atom = Position(word, loc.pos(s, e))
        else:
            try:
                K.expand(word)
            except KeyError:
                return None  # the parser reports the unknown kind
            atom = Kind(word, loc.pos(s, e))
        if out is None:
            out, first = atom, s
        else:  # left-associative, as the grammar: every chained node starts at the first atom
            out = (And if m.group(1) == "&" else Or)(out, atom, loc.pos(first, e))
    return out


def statements(text: str) -> list[tuple[int, int]]:
    """Split a body into statements: (start, end) offsets of each logical line.

    A line continues the previous one while brackets are open, or when it is indented more than the body's
    first line. Blank and comment-only lines are skipped.
    """
    out: list[tuple[int, int]] = []
    base: int | None = None
    depth = 0
    offset = 0
    for raw in text.split("\n"):
        start, end = offset, offset + len(raw)
        offset = end + 1
        code = raw.split("#", 1)[0]
        stripped = code.strip()
        if not stripped and depth == 0:
            continue
        indent = len(code) - len(code.lstrip())
        if depth == 0 and (not out or base is None or indent <= base):
            if base is None:
                base = indent
            out.append((start + indent, end))
        else:
            out[-1] = (out[-1][0], end)
        for ch in code:
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth = max(0, depth - 1)
    return out


def parse_block(
    text: str, *, path: str | None = None, line: int = 1, col: int = 1, located: Located | None = None
) -> Block:
    """Parse a body: `name = expr` lines, then one final expression."""
    loc = _located(text, path, line, col, located)
    spans = statements(loc.text)
    if not spans:
        raise loc.error("empty body", 0, "a body is `name = expr` lines followed by one final expression")
    parsed = [(_cached_ast(loc, s, e, "stmt_start", "expression"), s) for s, e in spans]
    assigns: list[Assign] = []
    for k, (stmt, s) in enumerate(parsed):
        last = k == len(parsed) - 1
        if isinstance(stmt, Assign):
            if last:
                raise loc.error(
                    "the body has no final expression: it ends with an assignment",
                    s,
                    f"add a last line with the body's value (e.g. just `{stmt.name}`)",
                )
            assigns.append(stmt)
        elif not last:
            raise loc.error(
                "only the last line of a body may be a bare expression",
                s,
                "earlier lines must be `name = expr`; to continue an expression on the next line, "
                "indent it more than the first line or wrap it in parentheses",
            )
    result = parsed[-1][0]
    start, end = spans[0][0], spans[-1][1]
    return Block(tuple(assigns), result, loc.pos(start, end))


__all__ = ["parse_expr", "parse_block", "parse_selector", "statements", "lark_parser"]

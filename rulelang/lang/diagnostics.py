"""Error helpers: where a piece of text lies in its file, and "did you mean" hints.

A `Located` text knows, for every character offset, the file line and column it came from. The loader builds
one per YAML scalar (mapping block scalars, folded scalars and quoted scalars back character by character);
the parser turns Lark's offsets into file positions through it, so every AST `Pos` and every error points at
the exact place in the file.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence

from ..errors import RuleError
from .ast import Pos


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelled word (case-insensitive match first), or None."""
    names = sorted(set(candidates))
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close:
        low = {n.lower(): n for n in names}
        close = [low[word.lower()]] if word.lower() in low else []
    return close[0] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """`did you mean `eps`?` for the closest candidate, or None."""
    best = closest(word, candidates)
    return f"did you mean `{best}`?" if best else None


def _line_starts(text: str) -> list[int]:
    """Offsets at which the lines of `text` start."""
    return [0] + [m.end() for m in _NEWLINE.finditer(text)] if "\n" in text else [0]


_NEWLINE = re.compile("\n")


class Located:
    """A text and the file position of each of its characters.

    Without `points`, line k of `text` is file line `line + k` and starts at file column `col` (the layout of
    a YAML block scalar). `points[k]` is the (line, col) of character k; `points[len(text)]` is the end.
    `file_lines` (the whole file, split) supplies the source line shown under an error; without it the
    text's own line is shown, shifted to its column.
    """

    def __init__(
        self,
        text: str,
        *,
        path: str | None = None,
        line: int = 1,
        col: int = 1,
        points: Sequence[tuple[int, int]] | None = None,
        file_lines: Sequence[str] | None = None,
    ) -> None:
        self.text = text
        self.path = path
        self.line = line
        self.col = col
        self.points = points
        self.file_lines = file_lines
        self._starts = _line_starts(text)

    def linecol(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        if self.points is not None:
            return self.points[offset]
        k = bisect_right(self._starts, offset) - 1
        return self.line + k, self.col + offset - self._starts[k]

    def pos(self, start: int, end: int | None = None) -> Pos:
        if self.points is None and len(self._starts) == 1 and end is not None and 0 <= start <= end <= len(self.text):
            return Pos(self.line, self.col + start, self.path, self.line, self.col + end)  # one line: a shift
        line, col = self.linecol(start)
        if end is None:
            return Pos(line, col, self.path)
        end_line, end_col = self.linecol(end)
        return Pos(line, col, self.path, end_line, end_col)

    def source_line(self, line: int) -> str | None:
        if self.file_lines is not None:
            return self.file_lines[line - 1] if 0 < line <= len(self.file_lines) else None
        k = line - self.line
        lines = self.text.split("\n")
        return " " * (self.col - 1) + lines[k] if 0 <= k < len(lines) else None

    def error(self, message: str, offset: int, hint: str | None = None) -> RuleError:
        line, col = self.linecol(offset)
        return RuleError(message, path=self.path, line=line, col=col, source_line=self.source_line(line), hint=hint)


class SourceFile:
    """A whole rule file: its text, split lines, and offset -> (line, col) conversion."""

    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path
        self.lines = text.split("\n")
        self._starts = _line_starts(text)

    def linecol(self, offset: int) -> tuple[int, int]:
        k = bisect_right(self._starts, offset) - 1
        return k + 1, offset - self._starts[k] + 1

    def error(
        self,
        message: str,
        line: int | None = None,
        col: int | None = None,
        hint: str | None = None,
        severity: str = "error",
    ) -> RuleError:
        src = self.lines[line - 1] if line is not None and 0 < line <= len(self.lines) else None
        return RuleError(message, path=self.path, line=line, col=col, source_line=src, hint=hint, severity=severity)


_LINES: dict[str, list[str]] = {}


def remember_lines(path: str, lines: Sequence[str]) -> None:
    """Record a file's lines so that errors at AST positions can show the source line."""
    _LINES[path] = list(lines)


def file_lines(path: str | None) -> list[str] | None:
    if path is None:
        return None
    if path not in _LINES:
        try:
            with open(path, encoding="utf-8") as f:
                _LINES[path] = f.read().split("\n")
        except (OSError, UnicodeDecodeError):
            return None
    return _LINES[path]


def error_at(
    pos: Pos | None,
    message: str,
    hint: str | None = None,
    *,
    lines: Sequence[str] | None = None,
    severity: str = "error",
    path: str | None = None,
) -> RuleError:
    """A RuleError at an AST position (the source line comes from `lines` or the file at `pos.path`)."""
    if pos is None:
        return RuleError(message, path=path, hint=hint, severity=severity)
    lines = lines if lines is not None else file_lines(pos.path)
    src = lines[pos.line - 1] if lines is not None and 0 < pos.line <= len(lines) else None
    return RuleError(
        message, path=pos.path or path, line=pos.line, col=pos.col, source_line=src, hint=hint, severity=severity
    )

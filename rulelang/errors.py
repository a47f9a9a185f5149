"""The project's error types. Every error a user can cause is a `RulelangError`; the CLI prints it as is."""

from __future__ import annotations


class RulelangError(Exception):
    """Base class: a clear, one-message error for the user (never shown with a traceback by the CLI)."""


class RuleError(RulelangError):
    """An error in a rule file, at a position: printed as `FILE:LINE:COL: error: ...` + source line + caret.

    `hint` is an extra line ("did you mean `eps`?", "expected `)`").
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        col: int | None = None,
        source_line: str | None = None,
        hint: str | None = None,
        severity: str = "error",
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.col = col
        self.source_line = source_line
        self.hint = hint
        self.severity = severity
        super().__init__(self.format())

    def format(self) -> str:
        where = self.path or "<rules>"
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        out = f"{where}: {self.severity}: {self.message}"
        if self.source_line is not None and self.line is not None:
            out += f"\n    {self.source_line.rstrip()}"
            if self.col is not None:
                out += "\n    " + " " * (self.col - 1) + "^"
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out


class CompileError(RulelangError):
    """The model and the rule file do not fit together (unmatched nodes, untraceable model, shape errors)."""


class ModelError(RulelangError):
    """A model, weight file or input the user supplied cannot be used."""


class ExplainError(RulelangError):
    """A call of a compiled explainer cannot be answered: a bad target, `keep`, input or injected relevance, or a
    model changed after compiling (a hook added, a submodule replaced)."""


class NonFiniteError(ExplainError):
    """An explanation came out with NaN or infinite values; the message names the first node where they appear."""


class NonFiniteWarning(RuntimeWarning):
    """Issued instead of `NonFiniteError` when the explainer runs with `on_nonfinite="warn"`."""


class DataError(RulelangError):
    """Unknown built-in dataset, split or sample image."""


class UsageError(RulelangError):
    """A bad command-line argument or input file given to a `rulelang` command (missing file, out-of-range
    target, data that does not fit the model)."""


class AnalysisError(RulelangError):
    """Bad input to a measured analysis (unknown node, wrong shapes, too few images or probes)."""


class AnalyzeError(AnalysisError):
    """Bad arguments to `rulelang.analyze` (unknown check, rule or node, unusable data): stops the whole run,
    where an `AnalysisError` of one rule's check is recorded in that rule's row."""


class PropertyFailed(AssertionError):
    """A `rulelang.testing` property does not hold (an AssertionError, so pytest reports it as a failed test):
    `check` names it, `offending` shows the values that break it."""

    def __init__(self, check: str, message: str, offending: str = "") -> None:
        self.check = check
        self.message = message
        self.offending = offending
        super().__init__(f"{check}: {message}" + (f"\n  offending values: {offending}" if offending else ""))


class NoMetaKernel(Exception):
    """Internal signal of the compile-time shape check: an op has no meta kernel, so the check is skipped."""

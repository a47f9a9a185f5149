"""The rule library: the checkout's top-level `rules/` folder, or the copy packaged as `rulelang/_rules/`.

A library name is a file stem (`lrp-epsilon` -> `rules/lrp-epsilon.yaml`). Files whose name starts with `_`
are shared definitions meant for `extend:`; they can be loaded by name but are not listed as methods.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RuleError
from .diagnostics import did_you_mean

SUFFIXES = (".yaml", ".yml")


def rules_dirs() -> list[Path]:
    """The library folders that exist, checkout first."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "rules", here.parents[1] / "_rules"]
    return [d for d in candidates if d.is_dir()]


def rules_dir() -> Path:
    """The main library folder (the checkout's `rules/`, else the packaged copy)."""
    dirs = rules_dirs()
    return dirs[0] if dirs else Path(__file__).resolve().parents[2] / "rules"


def _all_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in rules_dirs():
        for suffix in SUFFIXES:
            for p in sorted(d.glob(f"*{suffix}")):
                out.setdefault(p.stem, p)
    return out


def list_rules() -> list[str]:
    """Names of the library's rule files (shared `_*.yaml` definitions excluded)."""
    return sorted(n for n in _all_files() if not n.startswith("_"))


def rule_files() -> list[Path]:
    """Paths of every file in the library, shared definitions included."""
    return [p for _, p in sorted(_all_files().items())]


def looks_like_path(name: str | Path) -> bool:
    text = str(name)
    return isinstance(name, Path) or "/" in text or "\\" in text or text.endswith(SUFFIXES)


def find_rule(name: str) -> Path:
    """The library file for `name`; a RuleError with "did you mean" when there is none."""
    files = _all_files()
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem in files:
        return files[stem]
    hint = did_you_mean(stem, files) or (
        "available: " + ", ".join(list_rules()) if files else f"the library folder {rules_dir()} has no rule files"
    )
    raise RuleError(f"unknown rule `{name}`", hint=hint)

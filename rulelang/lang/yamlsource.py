"""The YAML layer: compose a rule file into position-carrying nodes and map scalars back to the file.

`yaml.compose` keeps each node's start/end marks. `located(node)` aligns the scalar's decoded value with the
raw file text character by character (skipping a block scalar's header line, quotes, escapes, folding and
indentation), so a position inside a `|`, `>`, plain multi-line or quoted scalar is the exact file position.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import RuleError
from .ast import Pos
from .diagnostics import Located, SourceFile, did_you_mean

_TAG = "tag:yaml.org,2002:"
#: libyaml when available (same nodes and marks, several times faster).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlSource(SourceFile):
    """A rule file's text, its composed YAML root node (None for an empty document), and node helpers."""

    def __init__(self, text: str, path: str | None) -> None:
        super().__init__(text, path)
        try:
            self.root: yaml.Node | None = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
            hint = f"{e.context}" if e.context else None
            raise self.error(f"YAML syntax error: {e.problem}", line, col, hint) from None
        except yaml.YAMLError as e:
            raise self.error(f"YAML error: {e}", 1, 1) from None

    # positions
    def pos(self, node: yaml.Node) -> Pos:
        m, e = node.start_mark, node.end_mark
        return Pos(m.line + 1, m.column + 1, self.path, e.line + 1, e.column + 1)

    def content_pos(self, node: yaml.Node) -> Pos:
        """Position of a scalar's first content character (after a quote or a block header)."""
        if isinstance(node, yaml.ScalarNode) and node.value:
            line, col = self.located(node).linecol(0)
            return Pos(line, col, self.path)
        return self.pos(node)

    def fail(
        self, node: yaml.Node, message: str, hint: str | None = None, *, content: bool = False, severity: str = "error"
    ) -> RuleError:
        p = self.content_pos(node) if content else self.pos(node)
        return self.error(message, p.line, p.col, hint, severity)

    def located(self, node: yaml.ScalarNode) -> Located:
        """The scalar's value with the file position of each character."""
        value: str = node.value
        start = node.start_mark.index
        raw = self.text[start : node.end_mark.index]
        if raw == value and "\n" not in value:  # a one-line plain scalar: positions are a shift
            m = node.start_mark
            return Located(value, path=self.path, line=m.line + 1, col=m.column + 1, file_lines=self.lines)
        p = 0
        if node.style in ("|", ">"):
            p = raw.find("\n") + 1 if "\n" in raw else len(raw)
        elif node.style in ('"', "'"):
            p = 1
        offsets: list[int] = []
        prev = start + p - 1
        for ch in value:
            if not ch.isspace():
                q = raw.find(ch, p)
                if q >= 0:
                    p = q + 1
                    prev = start + q
                    offsets.append(prev)
                    continue
            prev += 1
            offsets.append(prev)
        offsets.append(prev + 1)
        points = [self.linecol(min(o, len(self.text))) for o in offsets]
        return Located(value, path=self.path, points=points, file_lines=self.lines)

    # structure
    @staticmethod
    def describe(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        tag = node.tag.replace(_TAG, "")
        return {"int": "a number", "float": "a number", "bool": "true/false", "null": "nothing", "str": "a string"}.get(
            tag, tag
        )

    def mapping(
        self, node: yaml.Node, what: str, allowed: list[str] | None = None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """key -> (key node, value node); duplicate, non-string and (with `allowed`) unknown keys fail."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping, got {self.describe(node)}", content=True)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise self.fail(k, f"keys of {what} must be names, got {self.describe(k)}")
            key = k.value
            if key in out:
                raise self.fail(
                    k, f"duplicate key `{key}` in {what}", f"first given at line {out[key][0].start_mark.line + 1}"
                )
            if allowed is not None and key not in allowed:
                raise self.fail(
                    k,
                    f"unknown key `{key}` in {what}",
                    did_you_mean(key, allowed) or "allowed keys: " + ", ".join(allowed),
                )
            out[key] = (k, v)
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list, got {self.describe(node)}", content=True)
        return list(node.value)

    def text_of(self, node: yaml.Node, what: str) -> yaml.ScalarNode:
        """A scalar holding code or text (numbers are taken as their text); empty and non-scalars fail."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be text, got {self.describe(node)}", content=True)
        if node.tag == _TAG + "null" or not node.value.strip():
            raise self.fail(node, f"{what} is empty")
        return node

    def string(self, node: yaml.Node, what: str) -> str:
        return self.text_of(node, what).value

    def number(self, node: yaml.Node, what: str) -> float:
        """An int or float scalar (also a plain `1e-6`, which YAML 1.1 reads as a string)."""
        if isinstance(node, yaml.ScalarNode):
            tag = node.tag.replace(_TAG, "")
            if tag in ("int", "float") or (tag == "str" and not node.style):
                try:
                    return float(node.value if tag == "str" else _construct(node))
                except (ValueError, TypeError):
                    pass
        raise self.fail(
            node,
            f"{what} must be a number, got {self.describe(node)}"
            + (f" `{node.value}`" if isinstance(node, yaml.ScalarNode) and node.value else ""),
            content=True,
        )

    def integer(self, node: yaml.Node, what: str) -> int:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "int":
            return int(_construct(node))
        raise self.fail(node, f"{what} must be an integer, got {self.describe(node)}", content=True)


_CONSTRUCTOR = yaml.SafeLoader("")


def _construct(node: yaml.Node) -> Any:
    return _CONSTRUCTOR.construct_object(node, deep=True)

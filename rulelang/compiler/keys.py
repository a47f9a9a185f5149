"""`GraphKey`: which explaining or inspection graph an `Explainer` builds (and caches) for a call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: explain: seed at the output (`init:`) and propagate to the input; propagate: inject a relevance at node `at`;
#: params: the (folded) weights of `nodes`; activations: the input and output of each of `nodes`;
#: layer: node `nodes[0]`'s own op as a function of its input and weight, bias 0 (`layer(x, w=w, b=0)`)
Mode = Literal["explain", "propagate", "params", "activations", "layer"]


@dataclass(frozen=True)
class GraphKey:
    """The identity of one built graph.

    Attributes:
        mode: what the graph computes (see `Mode`).
        at: for "propagate", the node whose output receives the injected relevance.
        keep: for "explain"/"propagate", the relevances returned: none (False), all (True) or these op names.
        nodes: for the inspection modes, the op names it reads.
        cached_reference: for "explain"/"propagate" of a `reference: zeros` rule file: the zeros reference pass
            (every x0/y0 the rule reads) is computed in the parameter cache, and the graph reads no caller reference.
    """

    mode: Mode
    at: str | None = None
    keep: bool | frozenset[str] = False
    nodes: tuple[str, ...] = ()
    cached_reference: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("explain", "propagate", "params", "activations", "layer"):
            raise ValueError(f"unknown graph mode {self.mode!r}")
        if (self.mode == "propagate") != (self.at is not None):
            raise ValueError("`at` is given exactly for propagate graphs")
        if self.cached_reference and self.mode not in ("explain", "propagate"):
            raise ValueError("`cached_reference` is for explain/propagate graphs")


EXPLAIN = GraphKey("explain")

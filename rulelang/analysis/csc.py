"""Cosine similarity convergence (CSC), exactly as Sixt et al. 2020 compute it (research/paper.md §3.1).

res = rulelang.analysis.csc(explainer, images, at=("output", "features_10"))
res.to_dict()["injections"]["output"]["readouts"][-1]["median"]     # at the input

Per injection node, K random probes v ~ N(0, I) of that node's output shape are injected at its output for
every image, propagated down by the rule, and read at the output of every node below it and at the input. Per
readout node and spatial position the channel vector is taken (a dense tensor is one vector; the input's RGB
relevance per pixel), |cos| between all K·(K−1)/2 probe pairs, NaNs (zero vectors) dropped, and pooled over
positions × pairs × images: median (the paper's statistic), percentiles and mean, next to the random baseline
for that channel count and a whole-map |cos| of the flattened maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .stats import (
    PERCENTILES,
    AnalysisError,
    CosinePool,
    Readout,
    activations,
    ancestors,
    check_images,
    explainer_device,
    explainer_dtype,
    pair_cosines,
    progress_bar,
    random_baseline,
    resolve_op,
)

__all__ = ["csc", "CSCResult", "CSCReadout"]

#: kept relevance elements per propagate call when `batch_size` is not given (~256 MB in float32)
_CHUNK_ELEMENTS = 2**26
#: exact |cos| values kept over all readouts of one injection (float32: 512 MB at most)
_EXACT_TOTAL = 2**27


@dataclass
class CSCReadout:
    """The pooled statistics of one readout node for one injection node."""

    node: str
    channels: int
    median: float
    mean: float
    percentiles: dict[str, float]
    baseline: float
    whole_map: float
    count: int = 0
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "channels": self.channels,
            "median": self.median,
            "mean": self.mean,
            "percentiles": dict(self.percentiles),
            "baseline": self.baseline,
            "whole_map": self.whole_map,
            "count": self.count,
            "exact": self.exact,
        }


@dataclass
class CSCResult:
    """`injections[node]` = readouts ordered from the injection node down to "input"."""

    probes: int
    images: int
    seed: int
    injections: dict[str, list[CSCReadout]] = field(default_factory=dict)
    readout_mode: str = "final"

    def readout(self, node: str, injection: str | None = None) -> CSCReadout:
        """The readout at `node` ("input" for the input) for `injection` (default: the first)."""
        rows = self.injections[injection or next(iter(self.injections))]
        for r in rows:
            if r.node == node:
                return r
        raise AnalysisError(f"no readout at {node!r} (readouts: {', '.join(r.node for r in rows)})")

    def lowest(self, injection: str | None = None) -> CSCReadout:
        """The readout at the lowest node above the input (the first layer's output)."""
        rows = self.injections[injection or next(iter(self.injections))]
        return [r for r in rows if r.node != "input"][-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "probes": self.probes,
            "images": self.images,
            "seed": self.seed,
            "readout_mode": self.readout_mode,
            "injections": {k: {"readouts": [r.to_dict() for r in v]} for k, v in self.injections.items()},
        }

    def __str__(self) -> str:
        lines = [f"CSC: {self.probes} probes × {self.images} images, seed {self.seed} (median |cos| per readout)"]
        for inj, rows in self.injections.items():
            lines.append(f"injected at {inj}:")
            lines.append(f"  {'node':<28} {'C':>6} {'median':>9} {'1-median':>9} {'baseline':>9} {'whole map':>9}")
            for r in rows:
                lines.append(
                    f"  {r.node:<28} {r.channels:>6} {r.median:>9.4f} {1 - r.median:>9.2e} {r.baseline:>9.4f} "
                    f"{r.whole_map:>9.4f}"
                )
        return "\n".join(lines)


def _vectors(t: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """(b·k, C, *spatial) or (b·k, D) -> (b, k, positions, channels)."""
    t = t.reshape(b, k, *t.shape[1:])
    if t.dim() == 3:
        return t[:, :, None, :]
    return t.flatten(3).transpose(2, 3)


def _probe(shape: tuple[int, ...], k: int, seed: int, injection: int, image: int, dtype: torch.dtype) -> torch.Tensor:
    """K probes N(0, I) for one image, seeded by (seed, injection index, image index): independent of chunking."""
    s = int(np.random.SeedSequence([seed, injection, image]).generate_state(1)[0])
    g = torch.Generator().manual_seed(s)
    return torch.randn((k, *shape), generator=g, dtype=torch.float64).to(dtype)


def csc(
    explainer: Any,
    x: torch.Tensor,
    *,
    at: Any = ("output",),
    probes: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
    device: Any = None,
    progress: bool | None = None,
    reference: torch.Tensor | None = None,
    exact_limit: int = 2**22,
) -> CSCResult:
    """Cosine similarity convergence of random relevance probes (research/paper.md §3.1).

    Parameters
    ----------
    explainer : a compiled `rulelang.Explainer` (already on the device it should run on).
    x : N×... images; the forward pass runs on each real image.
    at : injection node names (a name or a sequence); "output" = the logits.
    probes : K probes per image (the paper: 5); the image is repeated K times in one `propagate` per chunk.
    seed : probes are N(0, I) seeded per (seed, injection, image), so results do not depend on `batch_size`.
    batch_size : images per `propagate` call (default: as many as keep ~2^26 relevance elements).
    device : where inputs go (default: the explainer's parameters' device); the explainer's dtype is used.
    progress : tqdm bar (None: only on a terminal).
    reference : reference input for rules with `reference: input`.
    exact_limit : |cos| values kept exactly per readout (and at most 2^27 over all readouts of one injection);
        beyond it percentiles come from a fine histogram on 1 − |cos| (see `stats.CosinePool`: relative error
        ~0.1 % in 1 − |cos| near 1, 1e-5 in |cos| below 0.9); count, mean, min and max stay exact. Memory is
        bounded by that, plus one chunk's relevances.

    The readout at a node is the rule's `final:` evaluated there (`stats.Readout`): relevance for LRP/gradient
    files, contributions (x − x0)·m for DeepLIFT files (RevealCancel: (x − x0)⁺·m⁺ + (x − x0)⁻·m⁻), the
    attribution at the input. Multi-stream files get the same probe in every stream (as the paper's DeepLIFT).
    """
    x = check_images(x)
    if probes < 2:
        raise AnalysisError(f"CSC needs at least 2 probes per image, got {probes}")
    names = [at] if isinstance(at, str) else list(at)
    if not names:
        raise AnalysisError("`at` names no injection node")
    dev = explainer_device(explainer, device, x)
    dtype = explainer_dtype(explainer, x)
    readout = Readout(explainer)
    n = x.shape[0]
    result = CSCResult(probes=probes, images=n, seed=seed, readout_mode=readout.mode)
    for inj_index, name in enumerate(names):
        op = resolve_op(explainer, name)
        below = ancestors(explainer, op)
        shape = tuple(op.shape[1:])
        per_sample = sum(int(np.prod(o.shape[1:])) for o in below) + int(np.prod(x.shape[1:]))
        bs = batch_size or max(1, min(n, _CHUNK_ELEMENTS // max(1, probes * per_sample)))
        limit = min(exact_limit, _EXACT_TOTAL // (len(below) + 1))
        pools = {o.name: CosinePool(limit) for o in below}
        pools["input"] = CosinePool(limit)
        whole: dict[str, list[np.ndarray]] = {k: [] for k in pools}
        channels: dict[str, int] = {}
        starts = range(0, n, bs)
        for lo in progress_bar(starts, progress, total=len(starts), desc=f"CSC at {name}"):
            xb = x[lo : lo + bs].to(device=dev, dtype=dtype)
            b = xb.shape[0]
            xr = xb.repeat_interleave(probes, 0)
            v = torch.cat([_probe(shape, probes, seed, inj_index, lo + i, dtype) for i in range(b)]).to(dev)
            ref = reference.to(device=dev, dtype=dtype) if reference is not None else None
            out = explainer.propagate(xr, at=op.name, relevance=v, keep="all", reference=ref)
            acts = acts0 = {}
            if readout.needs_x:
                acts = activations(explainer, xb, below)
            if readout.needs_x0:
                acts0 = activations(explainer, readout.reference(xb, ref), below)
            maps = {}
            for o in below:
                rel = out.relevances.get(o.name)
                if rel is None:
                    continue
                a = acts.get(o.name)
                a0 = acts0.get(o.name)
                maps[o.name] = readout(
                    rel,
                    None if a is None else a.repeat_interleave(probes, 0),
                    None if a0 is None else (a0 if a0.shape[0] == 1 else a0.repeat_interleave(probes, 0)),
                )
            maps["input"] = out.attribution
            for key, t in maps.items():
                vec = _vectors(t, b, probes)
                channels[key] = vec.shape[-1]
                cos = pair_cosines(vec)
                cos = cos[~torch.isnan(cos)]
                pools[key].add(1.0 - cos)
                flat = pair_cosines(t.reshape(b, probes, 1, -1))
                whole[key].append(flat[~torch.isnan(flat)].cpu().numpy())
        rows = []
        for key, pool in pools.items():
            if key not in channels:
                continue
            pct = pool.percentiles(PERCENTILES)
            w = np.concatenate(whole[key]) if whole[key] else np.array([])
            rows.append(
                CSCReadout(
                    node=key,
                    channels=channels[key],
                    median=pct["50"],
                    mean=pool.mean,
                    percentiles=pct,
                    baseline=random_baseline(channels[key], seed),
                    whole_map=float(np.median(w)) if w.size else float("nan"),
                    count=pool.n,
                    exact=pool.exact,
                )
            )
        result.injections[name] = rows
    return result

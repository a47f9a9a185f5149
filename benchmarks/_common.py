"""Shared pieces of the benchmark scripts: models, the plain-gradient baseline, the zennit/captum peers that
match each rule file, timing and peak-memory helpers.

Not a test module and not part of the package: the scripts next to it import it as `_common` (they run as
`python benchmarks/<script>.py`, so this folder is on sys.path).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# ------------------------------------------------------------------------------------------------------ models

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random biases and BatchNorm statistics (as the rule oracles in tests/rules use)."""
    from rulelang.testing.models import randomize_

    return randomize_(model, seed)


def build_model(name: str, seed: int = 0, randomized: bool = True) -> torch.nn.Module:
    """`rulelang.builtin_model(name)`: a torchvision architecture with seeded random weights (or a trained
    built-in digits model), in eval mode, parameters frozen (no method here needs parameter gradients)."""
    import rulelang

    torch.manual_seed(seed)
    model = rulelang.builtin_model(name)
    if randomized and name not in ("digits-cnn", "digits-resnet"):
        randomize(model, seed)
    return model.eval().requires_grad_(False)


def input_shape(name: str, size: int | None) -> tuple[int, int, int]:
    import rulelang.models as rm

    c, h, w = rm.model_info(name).input_shape
    return (c, size, size) if size else (c, h, w)


def images(n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """Signed inputs like normalised images."""
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randn(n, *shape, generator=g)


def canonizer_kind(name: str) -> str:
    if name.startswith("resnet") or name.startswith("resnext") or name.startswith("wide_resnet"):
        return "resnet"
    if name.startswith("vgg"):
        return "vgg"
    return "sequential"


def zennit_canonizers(kind: str) -> list:
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    return {"vgg": [VGGCanonizer()], "resnet": [ResNetCanonizer()], "sequential": [SequentialMergeBatchNorm()]}[kind]


# ------------------------------------------------------------------------------------------------ peer methods


@dataclass(frozen=True)
class Peer:
    """A zennit composite (by class name) or a single zennit rule on every linear layer over zennit's base map
    (how tests/helpers/rule_oracles.py builds them); `seed` is "output" (y * onehot) or "onehot"."""

    zennit: str | None = None
    zennit_kwargs: Callable[[], dict] = dict
    zennit_first: str | None = None  # a rule on the first linear layer (SpecialFirstLayerMapComposite)
    captum: str | None = None  # captum.attr class name
    seed: str = "output"


def _box() -> dict:
    return {"low": torch.full((1, 1, 1, 1), -3.0), "high": torch.full((1, 1, 1, 1), 3.0)}


#: rule file -> its zennit / captum counterparts (those the zennit/captum oracle tests check it against)
PEERS: dict[str, Peer] = {
    "gradient": Peer(),
    "gradient-x-input": Peer(captum="InputXGradient", seed="onehot"),
    "lrp-epsilon": Peer("Epsilon", captum="LRP"),
    "lrp-z": Peer("Epsilon", lambda: {"epsilon": 1e-9}),
    "lrp-zplus": Peer("ZPlus"),
    "lrp-alpha1-beta0": Peer("AlphaBeta", lambda: {"alpha": 1.0, "beta": 0.0}),
    "lrp-alpha2-beta1": Peer("AlphaBeta", lambda: {"alpha": 2.0, "beta": 1.0}),
    "lrp-alpha5-beta4": Peer("AlphaBeta", lambda: {"alpha": 5.0, "beta": 4.0}),
    "lrp-gamma": Peer("Gamma", lambda: {"gamma": 0.25}),
    "lrp-flat": Peer("Flat"),
    "lrp-wsquare": Peer("WSquare"),
    "lrp-zbox": Peer("Epsilon", zennit_first="ZBox", zennit_kwargs=_box),
    "lrp-epsilon-plus": Peer("EpsilonPlus"),
    "lrp-epsilon-plus-flat": Peer("EpsilonPlusFlat"),
    "lrp-epsilon-alpha2-beta1": Peer("EpsilonAlpha2Beta1"),
    "lrp-epsilon-alpha2-beta1-flat": Peer("EpsilonAlpha2Beta1Flat"),
    "lrp-epsilon-gamma-box": Peer("EpsilonGammaBox", _box),
    "excitation-bp": Peer("ExcitationBackprop", seed="onehot"),
    "guided-backprop": Peer("GuidedBackprop", captum="GuidedBackprop", seed="onehot"),
    "deconvnet": Peer("DeconvNet", captum="Deconvolution", seed="onehot"),
}


#: DESIGN §8: a rule needs at least the convolutions it names; time as a multiple of the plain gradient's
DESIGN_TARGETS: dict[str, float] = {
    "gradient": 1.0,
    "gradient-x-input": 1.0,
    "guided-backprop": 1.0,
    "deconvnet": 1.0,
    "lrp-epsilon": 1.0,
    "lrp-z": 1.0,
    "lrp-zplus": 1.5,
    "lrp-alpha1-beta0": 2.5,
    "lrp-alpha2-beta1": 2.5,
    "lrp-alpha5-beta4": 2.5,
}


def zennit_composite(peer: Peer, kind: str, device, dtype):
    import zennit.composites as zc
    import zennit.rules as zr
    from zennit.core import Composite
    from zennit.types import Linear

    kwargs = {k: (v.to(device, dtype) if torch.is_tensor(v) else v) for k, v in peer.zennit_kwargs().items()}
    cans = zennit_canonizers(kind)
    cls = getattr(zc, peer.zennit, None)
    if isinstance(cls, type) and issubclass(cls, Composite):
        return cls(canonizers=cans, **kwargs)
    if peer.zennit_first:
        return zc.SpecialFirstLayerMapComposite(
            layer_map=zc.layer_map_base() + [(Linear, getattr(zr, peer.zennit)())],
            first_map=[(Linear, getattr(zr, peer.zennit_first)(**kwargs))],
            canonizers=cans,
        )
    rule = getattr(zr, peer.zennit)(**kwargs)
    stab = kwargs.get("stabilizer", kwargs.get("epsilon", 1e-6))
    return zc.LayerMapComposite(layer_map=zc.layer_map_base(stab) + [(Linear, rule)], canonizers=cans)


def composite_label(peer: Peer) -> str:
    return f"zennit.{peer.zennit}" + (f"+{peer.zennit_first}" if peer.zennit_first else "")


# ------------------------------------------------------------------------------------------------- callables


def gradient_fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], torch.Tensor]:
    """(a) the plain input gradient: one forward + torch.autograd.grad of the target logits w.r.t. the input."""

    def run():
        xx = x.detach().requires_grad_(True)
        out = model(xx)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), xx)
        return g

    return run


class ZennitRunner:
    """zennit on a deep copy of the model; the composite is registered once (canonizers applied: reported as
    its compile time) and stays registered while the runner is timed: steady-state cost per call."""

    def __init__(self, model, peer: Peer, kind: str, x: torch.Tensor, target: torch.Tensor):
        t0 = time.perf_counter()
        self.model = copy.deepcopy(model)
        self.composite = zennit_composite(peer, kind, x.device, x.dtype)
        self.ctx = self.composite.context(self.model)
        self.modified = self.ctx.__enter__()
        self.setup_seconds = time.perf_counter() - t0
        self.x, self.target, self.seed = x, target, peer.seed

    def __call__(self) -> torch.Tensor:
        xx = self.x.detach().requires_grad_(True)
        out = self.modified(xx)
        onehot = torch.nn.functional.one_hot(self.target, out.shape[1]).to(out)
        grad_out = onehot * out.detach() if self.seed == "output" else onehot
        (attr,) = torch.autograd.grad(out, xx, grad_outputs=grad_out)
        return attr

    def close(self) -> None:
        self.ctx.__exit__(None, None, None)
        del self.model, self.modified


class CaptumRunner:
    """A captum.attr method on a deep copy of the model (captum LRP rewrites weights during a call)."""

    def __init__(self, model, method: str, x: torch.Tensor, target: torch.Tensor):
        import captum.attr as ca

        t0 = time.perf_counter()
        self.model = copy.deepcopy(model)
        self.algo = getattr(ca, method)(self.model)
        self.setup_seconds = time.perf_counter() - t0
        self.x, self.target = x, target

    def __call__(self) -> torch.Tensor:
        xx = self.x.detach().requires_grad_(True)
        return self.algo.attribute(xx, target=self.target)

    def close(self) -> None:
        del self.algo, self.model


# ---------------------------------------------------------------------------------------------------- timing


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def summarize(times: list[float]) -> dict[str, float]:
    return {"seconds": statistics.median(times), "min_seconds": min(times), "max_seconds": max(times), "n": len(times)}


def peak_memory(fn: Callable[[], Any], device) -> dict[str, Any] | None:
    """CUDA: peak bytes allocated during one call, absolute and above what was allocated before it."""
    if torch.device(device).type != "cuda":
        return None
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return {"peak_mib": round(peak / 2**20, 1), "peak_above_start_mib": round((peak - base) / 2**20, 1)}


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_peak_memory(fn: Callable[[], Any]) -> dict[str, Any]:
    """CPU (Linux): the resident-set high-water mark one call adds above what was resident before it.

    Run in a child started with MALLOC_MMAP_THRESHOLD_=65536 (freed tensors go back to the OS). The method is
    called once to warm up, then `5` written to /proc/self/clear_refs resets VmHWM to the current RSS, and the
    second call's VmHWM - VmRSS(before) is its peak (the parent's model-construction peak no longer counts).
    """
    fn()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")
    out = fn()
    peak = _proc_status_kib("VmHWM")
    del out
    return {"peak_above_start_mib": round((peak - before) / 1024, 1), "rss_before_mib": round(before / 1024, 1)}


def environment(device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    for mod in ("zennit", "captum"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing peer only removes its rows
            env[mod] = None
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        env["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return env


def compare(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Worst per-sample cosine and worst per-sample relative L2 error |a - b| / |b| (computed in float64)."""
    a = ours.detach().reshape(ours.shape[0], -1).double().cpu()
    b = ref.detach().reshape(ref.shape[0], -1).double().cpu()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    rel = (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-300)
    return {"cos": float(cos.min()), "rel": float(rel.max())}


@dataclass
class Method:
    name: str
    kind: str  # gradient | rulelang | zennit | captum
    fn: Callable[[], Any]
    rule: str | None = None
    compile_seconds: float | None = None
    first_call_seconds: float | None = None
    close: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def emit(result: dict[str, Any], out: str | None) -> dict[str, Any]:
    """Prints the result as indented JSON on stdout and, with `out`, writes the same text to that file."""
    text = json.dumps(result, indent=1)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    print(text)
    return result

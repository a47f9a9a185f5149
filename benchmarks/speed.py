"""Speed of rulelang's explaining models against the plain input gradient, zennit and captum, in one run on the
same model, batch, dtype and device (DESIGN §8: "What fast means").

    python benchmarks/speed.py --quick                        # vgg16, 32x32, batch 2, 3 rules, CPU: < 1 min
    python benchmarks/speed.py --model resnet50 --quick
    python benchmarks/speed.py --model vgg16 --batch 32 --device cuda --repeat 20
    python benchmarks/speed.py --model resnet50 --rules lrp-epsilon,lrp-zplus --no-peers

Prints ONE JSON object: {"config", "environment", "memory", "methods": {key: {...}}}. Method keys:

    gradient                 forward + torch.autograd.grad of the target logits w.r.t. the input (the baseline)
    rulelang/<rule>          rulelang.compile(model, rule) once, then explainer(x, target=...) per call
    zennit/<rule>            the matching zennit composite (with VGGCanonizer / ResNetCanonizer /
                             SequentialMergeBatchNorm), registered once, then forward + autograd.grad per call
    captum/<rule>            the matching captum.attr method (LRP for lrp-epsilon, GuidedBackprop, Deconvolution,
                             InputXGradient), constructed once, then .attribute per call

Per method: seconds (median wall time of one call), min/max, ratio_to_gradient (seconds / gradient's seconds),
ratio_to_zennit (seconds / the same rule's zennit seconds), compile_seconds (rulelang.compile; for peers: deep copy
+ composite registration / construction), first_call_seconds, and on CUDA peak memory. Calls are interleaved
round-robin over the methods (warm-up first), so load from other processes hits all methods alike.

All parameters are frozen (requires_grad=False) for every method: the gradient baseline computes no weight grads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

#: keyword arguments of every rulelang.compile (`--no-cache`: {"cache_parameters": False})
COMPILE_OPTIONS: dict[str, Any] = {}
_EXPLAINERS: dict[str, Any] = {}

DEFAULT_RULES = "gradient,lrp-epsilon,lrp-zplus,lrp-alpha2-beta1,lrp-epsilon-plus-flat,guided-backprop"
QUICK_RULES = "gradient,lrp-epsilon,lrp-zplus"


def _methods(
    model, x, target, rules: list[str], device, peers: bool, canon: str, only: str | None = None
) -> list[C.Method]:
    """Builds (compiles / registers) every method; `only` keeps one method key."""
    import rulelang

    want = lambda key: only is None or key == only
    out: list[C.Method] = []
    if want("gradient"):
        out.append(C.Method("gradient", "gradient", C.gradient_fn(model, x, target)))
    for rule in rules:
        key = f"rulelang/{rule}"
        if want(key):
            try:
                C.sync(device)
                t0 = time.perf_counter()
                # default settings: derived weights (w.pos, folded BN) are cached (--no-cache turns that off)
                explainer = rulelang.compile(model, rule, example_input=x, **COMPILE_OPTIONS)
                _EXPLAINERS[key] = explainer
                C.sync(device)
                compile_s = time.perf_counter() - t0
                fn = lambda e=explainer: e(x, target=target)
                out.append(C.Method(key, "rulelang", fn, rule=rule, compile_seconds=compile_s))
            except Exception as e:  # noqa: BLE001 - a failing rule is a row with an error, not a crash
                out.append(
                    C.Method(key, "rulelang", None, rule=rule, extra={"error": f"{type(e).__name__}: {e}"[:500]})
                )
        if not peers:
            continue
        peer = C.PEERS.get(rule)
        if peer is None:
            continue
        if peer.zennit and want(f"zennit/{rule}"):
            try:
                r = C.ZennitRunner(model, peer, canon, x, target)
                out.append(
                    C.Method(
                        f"zennit/{rule}",
                        "zennit",
                        r,
                        rule=rule,
                        compile_seconds=r.setup_seconds,
                        close=r.close,
                        extra={"method": C.composite_label(peer), "canonizer": canon},
                    )
                )
            except Exception as e:  # noqa: BLE001
                out.append(
                    C.Method(
                        f"zennit/{rule}",
                        "zennit",
                        None,
                        rule=rule,
                        extra={"method": C.composite_label(peer), "error": f"{type(e).__name__}: {e}"[:500]},
                    )
                )
        if peer.captum and want(f"captum/{rule}"):
            try:
                r = C.CaptumRunner(model, peer.captum, x, target)
                extra = {"method": f"captum.{peer.captum}"}
                if peer.captum == "LRP" and canon == "resnet":
                    extra["note"] = (
                        "captum LRP copies relevance into both summands of torchvision's functional "
                        "`out += identity`: it times a different (wrong) propagation on ResNets"
                    )
                out.append(
                    C.Method(
                        f"captum/{rule}",
                        "captum",
                        r,
                        rule=rule,
                        compile_seconds=r.setup_seconds,
                        close=r.close,
                        extra=extra,
                    )
                )
            except Exception as e:  # noqa: BLE001
                out.append(
                    C.Method(
                        f"captum/{rule}",
                        "captum",
                        None,
                        rule=rule,
                        extra={"method": f"captum.{peer.captum}", "error": f"{type(e).__name__}: {e}"[:500]},
                    )
                )
    return out


def _call(m: C.Method, device) -> tuple[float, Any]:
    try:
        return C.timed(m.fn, device)
    except Exception as e:  # noqa: BLE001
        m.extra["error"] = f"{type(e).__name__}: {e}"[:500]
        m.fn = None
        return float("nan"), None


def run_speed(
    model_name: str = "vgg16",
    batch: int = 2,
    size: int | None = 64,
    device: str = "cpu",
    dtype: str = "float32",
    rules: str | list[str] = DEFAULT_RULES,
    repeat: int = 5,
    warmup: int = 1,
    peers: bool = True,
    memory: bool = True,
    seed: int = 0,
    agreement: bool = True,
    model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """The measurement behind `speed.py` (also used by gpu_check.py). Returns the JSON-able report."""
    rules = [r for r in (rules.split(",") if isinstance(rules, str) else rules) if r]
    dev = torch.device(device)
    dt = C.DTYPES[dtype]
    shape = C.input_shape(model_name, size)
    if model is None:
        model = C.build_model(model_name, seed)
    model = model.to(dev, dt).eval().requires_grad_(False)
    x = C.images(batch, shape, seed).to(dev, dt)
    with torch.no_grad():
        target = model(x).argmax(1)
    canon = C.canonizer_kind(model_name)

    methods = _methods(model, x, target, rules, dev, peers, canon)
    live = [m for m in methods if m.fn is not None]
    last: dict[str, Any] = {}
    for m in live:  # first call (rulelang builds nothing here: compile did)
        m.first_call_seconds, last[m.name] = _call(m, dev)
    for _ in range(max(warmup - 1, 0)):
        for m in [m for m in live if m.fn is not None]:
            _call(m, dev)
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    for _ in range(repeat):  # round-robin: drift and noise hit every method alike
        for m in [m for m in live if m.fn is not None]:
            t, last[m.name] = _call(m, dev)
            times[m.name].append(t)

    report: dict[str, Any] = {}
    for m in methods:
        row: dict[str, Any] = {"kind": m.kind}
        if m.rule:
            row["rule"] = m.rule
        if times[m.name]:
            row.update(C.summarize(times[m.name]))
        row["compile_seconds"] = m.compile_seconds
        row["first_call_seconds"] = m.first_call_seconds
        row.update(m.extra)
        if m.name in _EXPLAINERS:  # derived weights the explainer keeps between calls (explainer.cache_bytes)
            row["cache_mib"] = round(_EXPLAINERS[m.name].cache_bytes / 2**20, 2)
        report[m.name] = row
    grad = report.get("gradient", {}).get("seconds")
    for _key, row in report.items():
        s = row.get("seconds")
        row["ratio_to_gradient"] = round(s / grad, 3) if s and grad else None
        z = report.get(f"zennit/{row.get('rule')}", {}).get("seconds") if row.get("rule") else None
        row["ratio_to_zennit"] = round(s / z, 3) if s and z else None
        c = report.get(f"captum/{row.get('rule')}", {}).get("seconds") if row.get("rule") else None
        if row["kind"] == "rulelang" and c:
            row["ratio_to_captum"] = round(s / c, 3)
        if row["kind"] == "rulelang" and row["rule"] in C.DESIGN_TARGETS:
            row["design_target_ratio"] = C.DESIGN_TARGETS[row["rule"]]

    if agreement:  # do the timed peers compute the same thing?
        for rule in rules:
            ours = last.get(f"rulelang/{rule}")
            for peer in ("zennit", "captum"):
                theirs = last.get(f"{peer}/{rule}")
                if ours is not None and theirs is not None:
                    report[f"{peer}/{rule}"]["agreement_with_rulelang"] = C.compare(ours, theirs)
        if "gradient" in last and "rulelang/gradient" in last:
            report["rulelang/gradient"]["agreement_with_gradient"] = C.compare(
                last["rulelang/gradient"], last["gradient"]
            )
    last.clear()

    mem_note = None
    if memory and dev.type == "cuda":
        for m in methods:
            if m.fn is not None:
                try:
                    report[m.name].update(C.peak_memory(m.fn, dev) or {})
                except Exception as e:  # noqa: BLE001
                    report[m.name]["memory_error"] = f"{type(e).__name__}: {e}"[:300]
        g = report.get("gradient", {}).get("peak_above_start_mib")
        for row in report.values():
            p = row.get("peak_above_start_mib")
            row["memory_ratio_to_gradient"] = round(p / g, 3) if p is not None and g else None
        mem_note = (
            "CUDA torch.cuda.max_memory_allocated during one call after the timing loop: peak_mib absolute "
            "(all model copies included), peak_above_start_mib above what was allocated before the call; "
            "memory_ratio_to_gradient uses the latter"
        )
    elif memory and sys.platform.startswith("linux"):
        for m in methods:
            if m.fn is not None:
                report[m.name].update(
                    _cpu_memory_in_child(m.name, model_name, batch, size, dtype, rules, seed, torch.get_num_threads())
                )
        g = report.get("gradient", {}).get("peak_above_start_mib")
        for row in report.values():
            p = row.get("peak_above_start_mib")
            row["memory_ratio_to_gradient"] = round(p / g, 3) if p is not None and g else None
        mem_note = (
            "CPU: one child process per method, started with MALLOC_MMAP_THRESHOLD_=65536 (freed tensors return to "
            "the OS); the method is called once, /proc/self/clear_refs resets VmHWM to the current RSS, and "
            "peak_above_start_mib = VmHWM - VmRSS(before) of the second call; memory_ratio_to_gradient uses it"
        )
    for m in methods:
        if m.close:
            m.close()

    return {
        "config": {
            "model": model_name,
            "batch": batch,
            "input_shape": list(shape),
            "device": str(dev),
            "dtype": dtype,
            "rules": rules,
            "repeat": repeat,
            "warmup": warmup,
            "seed": seed,
            "zennit_canonizer": canon if peers else None,
            "target": "argmax of the model's logits",
            "peers": peers,
            "compile_options": dict(COMPILE_OPTIONS),
        },
        "environment": C.environment(dev),
        "memory": mem_note,
        "methods": report,
    }


def _cpu_memory_in_child(
    key: str, model_name: str, batch: int, size: int | None, dtype: str, rules: list[str], seed: int, threads: int
) -> dict[str, Any]:
    """Runs `speed.py --memory-child KEY` in a fresh process (see _common.cpu_peak_memory)."""
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", key, "--model", model_name]
    cmd += ["--batch", str(batch), "--dtype", dtype, "--rules", ",".join(rules) or "gradient"]
    cmd += ["--seed", str(seed), "--threads", str(threads)] + (["--size", str(size)] if size else [])
    cmd += ["--no-cache"] if COMPILE_OPTIONS.get("cache_parameters") is False else []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001 - a failed measurement is a field, not a crash
        return {"memory_error": f"{type(e).__name__}: {e}"[:300]}


def _memory_child(args: argparse.Namespace) -> None:
    """The child side of the CPU memory measurement: builds one method and prints its peak as JSON."""
    shape = C.input_shape(args.model, args.size)
    model = C.build_model(args.model, args.seed).to(torch.device("cpu"), C.DTYPES[args.dtype]).eval()
    model.requires_grad_(False)
    x = C.images(args.batch, shape, args.seed).to(C.DTYPES[args.dtype])
    with torch.no_grad():
        target = model(x).argmax(1)
    rules = [r for r in args.rules.split(",") if r]
    (method,) = _methods(
        model, x, target, rules, torch.device("cpu"), True, C.canonizer_kind(args.model), only=args.memory_child
    )
    print(json.dumps(C.cpu_peak_memory(method.fn)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg16", help="rulelang.builtin_model name (torchvision or digits-*)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="input side (default: the model's, 224 for torchvision)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=sorted(C.DTYPES))
    p.add_argument(
        "--rules",
        default=None,
        help=f"comma-separated rule files (default {DEFAULT_RULES}; with --quick {QUICK_RULES})",
    )
    p.add_argument("--repeat", type=int, default=None, help="timed calls per method (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per method before timing (>= 1)")
    p.add_argument("--no-peers", action="store_true", help="skip zennit and captum")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument(
        "--no-cache", action="store_true", help="compile with cache_parameters=False (derived weights per call)"
    )
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small CPU run: 32x32 input, batch 2, repeat 5, 1 CPU thread, rules {QUICK_RULES}",
    )
    args = p.parse_args(argv)
    if args.no_cache:
        COMPILE_OPTIONS["cache_parameters"] = False
    if args.quick and args.threads is None and args.device == "cpu":
        args.threads = 1  # OpenMP threads spin-waiting on a shared, oversubscribed CPU cost 10x (measured here)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        args.batch = args.batch or 8
        args.rules = args.rules or DEFAULT_RULES
        return _memory_child(args)
    if args.quick:
        args.size = args.size or 32
        args.batch = args.batch or 2
        args.repeat = args.repeat or 5
        args.rules = args.rules or QUICK_RULES
    args.rules = args.rules or DEFAULT_RULES
    args.batch = args.batch or 8
    args.repeat = args.repeat or 10
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    report = run_speed(
        args.model,
        args.batch,
        args.size,
        args.device,
        args.dtype,
        args.rules,
        args.repeat,
        max(args.warmup, 1),
        not args.no_peers,
        memory=not args.no_memory,
        seed=args.seed,
    )
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()

"""Eager vs `explainer.compile()` (torch.compile of the explaining graph): speed ratio, cold compile time, graph
breaks and agreement, per model and rule. Prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/compile_mode.py                 # vgg16 + resnet50, 64x64, batch 8
    OMP_NUM_THREADS=1 python benchmarks/compile_mode.py --quick         # vgg16, 32x32, batch 2, two rules

Per rule: `eager_seconds` and `compiled_seconds` (medians of interleaved calls after warm-up),
`speedup` = eager / compiled (above 1: compiling pays), `cold_compile_seconds` (the first compiled call: dynamo +
the backend; a fresh inductor cache directory unless --warm-cache), `second_call_seconds`, `graph_breaks` of the
compiled graph (torch._dynamo.explain) and, for comparison, of ``torch.compile(explainer)`` (`--naive`),
`agreement` (worst per-sample cosine and relative error of compiled vs eager). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(__file__))
import _common as C  # noqa: E402

DEFAULT_RULES = "gradient,lrp-epsilon,lrp-zplus,lrp-epsilon-alpha2-beta1,guided-backprop,deeplift-rescale"


def _graph_breaks(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    torch._dynamo.reset()
    with torch.no_grad():
        e = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = sorted({str(b.reason).splitlines()[0][:160] for b in e.break_reasons})
    torch._dynamo.reset()
    return {"graphs": e.graph_count, "graph_breaks": e.graph_break_count, "reasons": reasons[:5]}


def run_rule(model: torch.nn.Module, rule: str, x: torch.Tensor, t: torch.Tensor, args: argparse.Namespace) -> dict:
    import rulelang
    from rulelang.compiler.explainer import dynamo_friendly, target_tensor
    from rulelang.compiler.keys import EXPLAIN

    eager = rulelang.compile(model, rule, example_input=x)
    options: dict[str, Any] = {"backend": args.backend, "fullgraph": True}
    if args.mode:
        options["mode"] = args.mode
    compiled = rulelang.compile(model, rule, example_input=x, torch_compile=options)
    row: dict[str, Any] = {"options": options}

    gm = eager.build(EXPLAIN)
    call_args = (x, target_tensor(t, x)) + ((None,) if eager.rules.reference else ())
    row["compiled_graph"] = _graph_breaks(dynamo_friendly(gm).forward, *call_args, **eager._hoisted(EXPLAIN))
    if args.naive:
        row["torch_compile_explainer"] = _graph_breaks(eager, x, t)

    reference = eager(x, t)
    seconds, out = C.timed(lambda: compiled(x, t), "cpu")
    row["cold_compile_seconds"] = round(seconds, 2)
    row["agreement"] = C.compare(out, reference)
    row["second_call_seconds"] = round(C.timed(lambda: compiled(x, t), "cpu")[0], 4)
    for _ in range(args.warmup):
        eager(x, t)
        compiled(x, t)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeat):
        times["eager"].append(C.timed(lambda: eager(x, t), "cpu")[0])
        times["compiled"].append(C.timed(lambda: compiled(x, t), "cpu")[0])
    e, c = C.summarize(times["eager"]), C.summarize(times["compiled"])
    row["eager_seconds"], row["compiled_seconds"] = round(e["seconds"], 4), round(c["seconds"], 4)
    row["eager_min_max"] = [round(e["min_seconds"], 4), round(e["max_seconds"], 4)]
    row["compiled_min_max"] = [round(c["min_seconds"], 4), round(c["max_seconds"], 4)]
    row["speedup"] = round(e["seconds"] / c["seconds"], 3)
    torch._dynamo.reset()
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg16,resnet50")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rules", default=DEFAULT_RULES)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--mode", default=None, help="torch.compile mode (default: torch's default)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk cache (cold time not cold)")
    p.add_argument(
        "--naive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also count graph breaks of torch.compile(explainer)",
    )
    p.add_argument("--quick", action="store_true", help="vgg16, 32x32, batch 2, lrp-epsilon and lrp-zplus")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.size, args.batch, args.rules, args.repeat = "vgg16", 32, 2, "lrp-epsilon,lrp-zplus", 3
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rulelang-inductor-")
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "what": "eager vs explainer.compile() (torch.compile of the explain graph), CPU",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "environment": C.environment("cpu"),
        "models": {},
    }
    t_all = time.perf_counter()
    for name in args.models.split(","):
        model = C.build_model(name)
        x = C.images(args.batch, C.input_shape(name, args.size))
        with torch.no_grad():
            t = model(x).argmax(1)
        rows = {}
        for rule in args.rules.split(","):
            rows[rule] = run_rule(model, rule, x, t, args)
            print(json.dumps({name: {rule: rows[rule]}}), file=sys.stderr, flush=True)
        result["models"][name] = {"input_shape": list(x.shape), "rules": rows}
    result["speedup_summary"] = {
        m: {r: row["speedup"] for r, row in v["rules"].items()} for m, v in result["models"].items()
    }
    result["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    return C.emit(result, args.out)


if __name__ == "__main__":
    main()

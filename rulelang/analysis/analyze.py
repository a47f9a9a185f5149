"""`rulelang.analyze`: every faithfulness check of Sixt et al. 2020 for several rules on one model, as a report.

    report = rulelang.analyze("digits-cnn")                          # every library rule, built-in test digits
    report = rulelang.analyze(model, ["lrp-zplus", "my-rule.yaml"], (x, y), n=50, out="out/analysis")
    print(report.table())

Per rule: compile (and fit the rule's `fit:` statistics first when it has some), then the checks in order —
``static`` (sign analysis, no data), ``theory`` (the actual layer maps on a few inputs), ``csc`` (random probes
injected at the logits or at `at`), ``sanity`` (random-logit test and cascading randomization). A check that
fails is recorded in that rule's row and the run goes on.
"""

from __future__ import annotations

import inspect
import platform
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnalyzeError, RulelangError
from .report import Report, RuleReport

__all__ = ["CHECKS", "DEFAULTS", "AnalyzeError", "analyze", "resolve_rules", "select_images"]

#: every check, in the order they run
CHECKS: tuple[str, ...] = ("static", "theory", "csc", "sanity")

#: default sizes, chosen for the time budget (all library rules on digits-cnn in under 3 minutes on 2 CPU cores;
#: measured: 32 rules, 166 s of CPU time with one thread): n images for CSC and the sanity checks (the paper:
#: 200), one image for the theory's layer maps (the slowest check: ~40 % of the time), 256 training images to fit
#: pattern statistics (shared between PatternNet and PatternAttribution).
DEFAULTS: dict[str, Any] = {
    "n": 32,
    "probes": 5,
    "theory_n": 1,
    "heatmap_images": 4,
    "randomization": "cascading",
    "fit_n": 256,
    "fit_batch": 128,
}


# ----------------------------------------------------------------------------------------------- inputs
def resolve_rules(rules: Any) -> list[Any]:
    """None -> every library rule (no `_` files); a name, path or RuleFile -> [it]; a sequence -> list."""
    from ..lang import library

    if rules is None:
        return list(library.list_rules())
    out = [rules] if isinstance(rules, (str, Path)) or hasattr(rules, "rules") else list(rules)
    if not out:
        raise AnalyzeError("no rules to analyze")
    for rule in out:  # a typo fails at once, not after minutes of analysis
        if isinstance(rule, (str, Path)):
            if library.looks_like_path(rule):
                if not Path(rule).is_file():
                    raise AnalyzeError(f"rule file not found: {rule}")
            else:
                try:
                    library.find_rule(str(rule))
                except RulelangError as e:
                    hint = getattr(e, "hint", None)
                    raise AnalyzeError(f"unknown rule {str(rule)!r}" + (f": {hint}" if hint else "")) from None
    return out


def _rule_name(rule: Any) -> str:
    if hasattr(rule, "name") and not isinstance(rule, (str, Path)):
        return str(rule.name)
    text = str(rule)
    return Path(text).stem if text.endswith((".yaml", ".yml")) else text


def _rule_path(rule: Any) -> str | None:
    from ..lang import library

    if hasattr(rule, "path") and not isinstance(rule, (str, Path)):
        return str(rule.path) if rule.path else None
    if library.looks_like_path(rule):
        return str(rule)
    try:
        return str(library.find_rule(str(rule)))
    except RulelangError:
        return None


def select_images(x: Any, y: Any, n: int | None, seed: int) -> tuple[Any, Any, list[int]]:
    """The first image plus a seeded random choice of the others, n in all (the paper: one exemplary image
    and 199 random ones). Returns (x, y, indices)."""
    total = int(x.shape[0])
    if n is None or n >= total:
        idx = list(range(total))
    else:
        if n < 1:
            raise AnalyzeError(f"n must be at least 1, got {n}")
        rest = np.random.default_rng(seed).permutation(np.arange(1, total))[: n - 1]
        idx = [0, *sorted(int(i) for i in rest)]
    return x[idx], (y[idx] if y is not None else None), idx


def _model(model: Any, weights: Any) -> tuple[Any, str, Any]:
    """-> (module, name, ModelInfo or None)."""
    from ..models import builtin_model, model_info

    if isinstance(model, str):
        return builtin_model(model, weights=weights), model, model_info(model)
    if weights is not None:
        from ..models import load_weights

        load_weights(model, weights)
    return model, type(model).__name__, None


def _data(data: Any, info: Any, model: Any) -> tuple[Any, Any, str]:
    """-> (x, y or None, description)."""
    import torch

    from ..data import builtin_data

    if data is None:
        if info is not None and info.data:
            x, y = builtin_data(info.data, "test")
            return x, y, f"{info.data} (test split)"
        if info is not None and info.normalize == "imagenet":
            from ..data import sample_images

            x, names = sample_images(size=info.input_shape[1:])
            return x, None, f"scikit-image sample photos ({', '.join(names)})"
        raise AnalyzeError("no data given and the model has no built-in data set: pass data=(x, y) or x")
    if isinstance(data, str):
        x, y = builtin_data(data, "test")
        return x, y, f"{data} (test split)"
    if isinstance(data, torch.Tensor):
        return data, None, f"tensor {list(data.shape)}"
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        y = None if y is None else torch.as_tensor(y)
        if y is not None and y.shape[0] != x.shape[0]:
            raise AnalyzeError(f"data has {x.shape[0]} images but {y.shape[0]} labels")
        return x, y, f"tensor {list(x.shape)}"
    raise AnalyzeError(f"data must be a built-in name, a tensor or (images, labels), got {type(data).__name__}")


def _fit_data(info: Any, x: Any, n: int | None, batch: int, seed: int) -> tuple[list[Any], str]:
    """Batches for fitting `fit:` statistics: a seeded choice of `n` images of the model's built-in training
    split (None = all), else the analysed images."""
    from ..data import builtin_data

    if info is not None and info.data:
        xt, _ = builtin_data(info.data, "train")
        total = len(xt)
        if n is not None and n < total:
            xt = xt[np.sort(np.random.default_rng(seed).permutation(total)[:n])]
        where = f"{len(xt)} images of the {info.data} train split"
    else:
        xt, where = x, f"the {len(x)} images given"
    return [xt[i : i + batch] for i in range(0, len(xt), batch)], where


def _fit_key(explainer: Any) -> tuple:
    """What the fitted statistics depend on besides model and data: (name, estimator, node) per target."""
    return tuple(sorted((s.name, str(getattr(s, "estimator", "")), op.name) for s, op in explainer.fit_targets()))


def _versions() -> dict[str, str]:
    import torch

    import rulelang

    out = {"rulelang": rulelang.__version__, "python": platform.python_version(), "torch": torch.__version__}
    out["numpy"] = np.__version__
    for mod in ("torchvision", "scipy", "skimage"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed: not needed by the checks that ran
            pass
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    name = type(e).__name__
    return first if isinstance(e, RulelangError) and first else f"{name}: {first}" if first else name


def _call(fn: Callable[..., Any], *args: Any, rule_params: dict | None = None, **kwargs: Any) -> Any:
    """Call an analysis function with the keyword arguments its signature names (the others are options this
    version of the function does not have); `rule_params` go to its ``**params`` (rule parameters) if any."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k in params and params[k].kind is not params[k].VAR_KEYWORD}
    if rule_params and any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs.update(rule_params)
    return fn(*args, **kwargs)


def _dict(result: Any) -> dict:
    from .report import jsonable

    return jsonable(result.to_dict() if hasattr(result, "to_dict") else result)


def _check_nodes(explainer: Any, at: Sequence[str]) -> None:
    nodes = set(explainer.nodes)
    for name in at:
        if name == "output" or name in nodes:
            continue
        from ..lang.diagnostics import closest

        best = closest(name, list(nodes))
        hint = f"; did you mean {best!r}?" if best else ""
        raise AnalyzeError(f"unknown node {name!r} for --at{hint} (nodes: {', '.join(explainer.nodes[:6])}, ...)")


# ---------------------------------------------------------------------------------------------- analyze
def analyze(
    model: Any = "digits-cnn",
    rules: Any = None,
    data: Any = None,
    *,
    checks: Sequence[str] | str = CHECKS,
    n: int | None = DEFAULTS["n"],
    at: Sequence[str] | str | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool | None = None,
    out: str | Path | None = None,
    **options: Any,
) -> Report:
    """Analyze rules for faithfulness on a model and data; returns a :class:`~rulelang.analysis.report.Report`.

    Parameters
    ----------
    model : a built-in / torchvision model name (``"digits-cnn"``, ``"vgg16"``) or an ``nn.Module``.
    rules : rule names, paths or loaded rule files; None = every rule of the library.
    data : None (the model's built-in test split; for torchvision models the scikit-image sample photos), a
        built-in data set name, a tensor of inputs (labels = the model's predictions) or ``(inputs, labels)``.
    checks : any of ``"static"``, ``"theory"``, ``"csc"``, ``"sanity"`` (a list or a comma-separated string).
    n : images used (the first one and a seeded random choice of the rest; None = all). The paper uses 200.
    at : CSC injection nodes (default: ``"output"``, the logits).
    device : ``"cpu"`` or ``"cuda"``. seed : seeds image choice, probes, random classes, re-initialisation.
    progress : tqdm progress bars (None: only on a terminal). out : also save the report there.
    **options : ``weights`` (state_dict file for a named model), ``probes`` (5), ``theory_n`` (images for the
        theory, 1), ``heatmap_images`` (4), ``randomization`` ("cascading" or "independent"),
        ``input_bounds`` and ``params`` (passed to ``rulelang.compile``), ``fit_data`` (batches for `fit:`).
    """
    import torch

    from .stats import progress_bar

    t_start = time.perf_counter()
    opts = {**DEFAULTS, **options}
    unknown = sorted(set(opts) - set(DEFAULTS) - {"weights", "input_bounds", "params", "fit_data", "model_name"})
    if unknown:
        raise AnalyzeError(f"unknown option(s) {', '.join(unknown)} for analyze()")
    if isinstance(checks, str):
        checks = [c.strip() for c in checks.split(",") if c.strip()]
    bad = [c for c in checks if c not in CHECKS]
    if bad or not checks:
        raise AnalyzeError(f"unknown check(s) {', '.join(bad) or '(none)'}: use {', '.join(CHECKS)}")
    checks = [c for c in CHECKS if c in checks]
    at = ["output"] if at is None else [at] if isinstance(at, str) else list(at)
    if device not in ("cpu",) and not str(device).startswith("cuda"):
        raise AnalyzeError(f"unknown device {device!r}: use cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise AnalyzeError("--device cuda: no CUDA device is available here")
    rule_list = resolve_rules(rules)
    module, model_name, info = _model(model, opts.get("weights"))
    model_name = opts.get("model_name") or model_name
    module = module.to(device).eval()
    x_all, y_all, data_desc = _data(data, info, module)
    x, y, idx = select_images(x_all, y_all, n, seed)
    x = x.to(device)
    with torch.no_grad():
        logits = module(x)
    preds = logits.argmax(1)
    if y is None:
        y = preds.clone()
        data_desc += " (labels: the model's predictions)"
    y = y.to(device)
    meta: dict[str, Any] = {
        "model": model_name,
        "model_description": info.description if info is not None else type(module).__name__,
        "data": data_desc,
        "n": len(idx),
        "indices": idx,
        "accuracy": float((preds == y).float().mean()),
        "seed": seed,
        "device": str(device),
        "checks": list(checks),
        "at": list(at),
        "options": {k: opts[k] for k in DEFAULTS if k != "n"},
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    seconds = {c: 0.0 for c in ("compile", "fit", *checks, "heatmaps")}
    k_heat = min(int(opts["heatmap_images"]), len(idx))
    reports: list[RuleReport] = []
    fitted_cache: dict[tuple, tuple[Any, str]] = {}
    nodes_checked = False
    for rule in progress_bar(rule_list, progress, total=len(rule_list), desc="rules"):
        rep = RuleReport(rule=_rule_name(rule), path=_rule_path(rule))
        reports.append(rep)

        def timed(name: str, fn: Callable[[], Any], rep: RuleReport = rep) -> Any:
            t0 = time.perf_counter()
            try:
                return fn()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # recorded in the rule's row; the run goes on
                if isinstance(e, AnalyzeError):
                    raise
                rep.errors[name] = _one_line(e)
                return None
            finally:
                dt = time.perf_counter() - t0
                rep.seconds[name] = round(rep.seconds.get(name, 0.0) + dt, 3)
                seconds[name] = seconds.get(name, 0.0) + dt

        ex = timed("compile", partial(_compile, module, rule, x, opts))
        if ex is None:
            continue
        if "csc" in checks and not nodes_checked:
            _check_nodes(ex, at)  # an unknown --at node stops the run at once
            nodes_checked = True
        if getattr(ex.rules, "fit", None):
            key = _fit_key(ex)
            if key in fitted_cache:  # the same statistics (e.g. PatternNet's and PatternAttribution's patterns)
                done = timed("fit", partial(_set_fitted, ex, fitted_cache[key][0]))
                where = fitted_cache[key][1]
            else:
                if opts.get("fit_data") is not None:
                    batches, where = list(opts["fit_data"]), "the given fit_data"
                else:
                    fit_n = opts["fit_n"]
                    batches, where = _fit_data(info, x_all, fit_n, int(opts["fit_batch"]), seed)
                done = timed("fit", partial(_fit, ex, batches, device, progress))
                if done is not None:
                    fitted_cache[key] = (_fitted(ex), where)
            if done is None:
                continue
            rep.notes.append(f"fit: statistics fitted on {where}")
        if "static" in checks:
            from .static import static as static_fn

            res = timed("static", partial(static_fn, ex))
            rep.static = _dict(res) if res is not None else None
        if "theory" in checks:
            from .theory import theory as theory_fn

            k = min(int(opts["theory_n"]), len(idx))
            res = timed("theory", partial(_call, theory_fn, ex, x[:k], device=device, progress=False, seed=seed))
            rep.theory = _dict(res) if res is not None else None
        if "csc" in checks:
            from .csc import csc as csc_fn

            res = timed(
                "csc",
                partial(
                    _call,
                    csc_fn,
                    ex,
                    x,
                    at=tuple(at),
                    probes=int(opts["probes"]),
                    seed=seed,
                    device=device,
                    progress=progress,
                ),
            )
            rep.csc = _dict(res) if res is not None else None
        if "sanity" in checks:
            rep.sanity = _sanity(ex, module, rule, x, y, seed, device, progress, opts, rep, timed)
        if k_heat:
            att = timed("heatmaps", partial(ex, x[:k_heat], y[:k_heat]))
            if att is not None:
                rep.artifacts["heatmaps"] = att.detach().cpu().numpy()
    total = time.perf_counter() - t_start
    meta["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    meta["seconds_total"] = round(total, 2)
    report = Report(meta=meta, rules=reports)
    report.artifacts.update(images=x[:k_heat].detach().cpu().numpy(), labels=y[:k_heat].tolist())
    report.artifacts["predictions"] = preds[:k_heat].tolist()
    if out is not None:
        report.save(out)
    return report


def _compile(model: Any, rule: Any, x: Any, opts: dict[str, Any]) -> Any:
    import rulelang

    params = dict(opts.get("params") or {})
    kwargs: dict[str, Any] = {"example_input": x[:1]}
    if opts.get("input_bounds") is not None:
        kwargs["input_bounds"] = opts["input_bounds"]
    return rulelang.compile(model, rule, **kwargs, **params)


def _fit(explainer: Any, batches: list[Any], device: str, progress: bool | None) -> Any:
    import rulelang

    show = sys.stderr.isatty() if progress is None else bool(progress)
    moved = [b.to(device) if hasattr(b, "to") else b for b in batches]
    return rulelang.fit(explainer, moved, progress=show)


def _sanity(
    ex: Any,
    model: Any,
    rule: Any,
    x: Any,
    y: Any,
    seed: int,
    device: str,
    progress: bool | None,
    opts: dict[str, Any],
    rep: RuleReport,
    timed: Callable[..., Any],
) -> dict | None:
    """The random-logit test on the compiled explainer, then parameter randomization on a copy of the model
    (the rule re-compiled there with the same parameters, bounds and fitted statistics)."""
    from .sanity import random_logit, randomization

    out: dict[str, Any] = {}
    k = int(opts["heatmap_images"])
    rl = timed("sanity", lambda: _call(random_logit, ex, x, y, seed=seed, device=device, examples=k))
    if rl is not None:
        out["random_logit"] = _dict(rl)
        scores = getattr(getattr(rl, "scores", None), "ssim", None)
        if scores is not None:
            rep.artifacts["random_logit_scores"] = np.asarray(scores, dtype=float)
    compile_kwargs = dict(opts.get("params") or {})
    if opts.get("input_bounds") is not None:
        compile_kwargs["input_bounds"] = opts["input_bounds"]
    fitted = _fitted(ex)
    if fitted:
        compile_kwargs["fitted"] = fitted
    rnd = timed(
        "sanity",
        lambda: _call(
            randomization,
            model,
            rule,
            x,
            y,
            mode=opts["randomization"],
            seed=seed,
            device=device,
            progress=progress,
            examples=k,
            rule_params=compile_kwargs,
        ),
    )
    if rnd is not None:
        out["randomization"] = _dict(rnd)
        maps = [(str(name), m.detach().cpu().numpy()) for name, m in getattr(rnd, "examples", []) or []]
        if maps:
            rep.artifacts["randomization"] = maps
    return out or None


def _fitted(explainer: Any) -> dict | None:
    """The explainer's fitted statistics {(name, node): tensor}, for re-compiling it on randomized copies."""
    fitted = getattr(explainer, "fitted", None)
    if fitted is None or not hasattr(fitted, "named_buffers"):
        return None
    out = {tuple(k.split("__", 1)): v for k, v in fitted.named_buffers()}
    return out or None


def _set_fitted(ex: Any, fitted: Any) -> Any:
    """Installs statistics fitted for an earlier rule with the same `fit:` (returns the explainer)."""
    ex.set_fitted(fitted)
    return ex

"""Prints the oracle agreement table (worst per-sample cosine and relative error) of every rule file that has a
zennit or captum oracle:  .venv/bin/python -m tests.rules.oracle_report"""

import torch

from tests.helpers import rule_oracles as O
from tests.rules.test_zennit_oracles import CASES, _composite


def main() -> None:
    torch.set_num_threads(2)
    models = {"vgg": None, "resnet": None}
    models["vgg"] = O.vgg16(0), O.images(2, 32, 0)
    models["resnet"] = O.resnet50(0), O.images(2, 32, 1)
    print(f"{'rule':32s} {'oracle':28s} {'model':7s} {'cosine':>12s} {'rel. error':>11s}")
    for arch, (model, x) in models.items():
        t = O.labels(model, x)
        for rule, params, zname, zkw, seed in CASES:
            theirs = O.zennit_explain(model, x, t, _composite(zname, arch, zkw), seed=seed)
            m = O.compare(O.ours(model, rule, x, t, **params), theirs)
            print(f"{rule:32s} {'zennit ' + zname:28s} {arch:7s} {m['cos']:12.9f} {m['rel']:11.2e}", flush=True)
    model, x = models["vgg"]
    t = O.labels(model, x)
    for rule, method in [
        ("gradient-x-input", "InputXGradient"),
        ("guided-backprop", "GuidedBackprop"),
        ("deconvnet", "Deconvolution"),
    ]:
        m = O.compare(O.ours(model, rule, x, t), O.captum_explain(model, x, t, method))
        print(f"{rule:32s} {'captum ' + method:28s} {'vgg':7s} {m['cos']:12.9f} {m['rel']:11.2e}", flush=True)
    m = O.compare(O.ours(model, "deeplift-rescale", x, t, thr=1e-10), O.captum_deeplift(model, x, t))
    print(f"{'deeplift-rescale':32s} {'captum DeepLift (switches)':28s} {'vgg':7s} {m['cos']:12.9f} {m['rel']:11.2e}")
    m = O.compare(O.ours(model, "deeplift-rescale", x, t, thr=1e-10), O.captum_deeplift(model, x, t, maxpool="captum"))
    print(f"{'deeplift-rescale':32s} {'captum DeepLift (default)':28s} {'vgg':7s} {m['cos']:12.9f} {m['rel']:11.2e}")


if __name__ == "__main__":
    main()

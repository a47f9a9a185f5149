"""Quickstart: explain the built-in digits CNN with three rules and print what the compiler built.

.venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import torch

import rulelang


def main() -> None:
    model = rulelang.builtin_model("digits-cnn")
    images, labels = rulelang.builtin_data("digits-rgb", split="test")
    x, y = images[:8], labels[:8]

    for rule in ["gradient", "lrp-epsilon-plus", "guided-backprop"]:
        explainer = rulelang.compile(model, rule, example_input=x)
        attribution = explainer(x, target=y)  # same shape as x
        print(
            f"{rule:18s} attribution {tuple(attribution.shape)}, "
            f"sum per image {attribution.sum((1, 2, 3))[:3].tolist()}"
        )

    explainer = rulelang.compile(model, "lrp-epsilon-plus", example_input=x)
    print(explainer.plan)  # node -> kind -> rule -> rule line
    result = explainer.explain(x, target=y, keep="all")  # relevance at every node
    print("relevance kept at", len(result.relevances), "nodes; logits", tuple(result.output.shape))
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    print(f"digits-cnn test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()

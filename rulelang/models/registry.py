"""The model registry: the built-in digits networks (name -> constructor + what they take) and every torchvision
classification architecture, built by name with :func:`builtin_model`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..lang.diagnostics import closest
from .loading import load_weights, weights_path

__all__ = ["BUILTIN_MODELS", "ModelInfo", "available_models", "builtin_model", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a built-in model."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W of one input
    num_classes: int
    data: str | None  # the built-in dataset it was trained on (`builtin_data(data)`)
    normalize: str | None  # "imagenet" for torchvision models: mean/std standardisation
    description: str


def _digits_cnn():
    from .digits import DigitsCNN

    return DigitsCNN()


def _digits_resnet():
    from .digits import DigitsResNet

    return DigitsResNet()


def _digits_vgg16():
    from .digits import DigitsVGG16

    return DigitsVGG16()


def _digits_vit():
    from .vit import DigitsViT

    return DigitsViT()


#: name -> (constructor, info) of the models trained here
BUILTIN_MODELS: dict[str, tuple[Callable[[], Any], ModelInfo]] = {
    "digits-cnn": (
        _digits_cnn,
        ModelInfo(
            "digits-cnn",
            (3, 32, 32),
            10,
            "digits-rgb",
            None,
            "VGG-style, 6 conv + 2 dense, ReLU, 3 max-pools; trained on the RGB digits",
        ),
    ),
    "digits-resnet": (
        _digits_resnet,
        ModelInfo(
            "digits-resnet",
            (3, 32, 32),
            10,
            "digits-rgb",
            None,
            "ResNet, 6 basic blocks with BatchNorm and functional adds; trained on the RGB digits",
        ),
    ),
    "digits-vgg16": (
        _digits_vgg16,
        ModelInfo(
            "digits-vgg16",
            (3, 32, 32),
            10,
            "digits-rgb",
            None,
            "VGG-16 layout (13 conv + 3 dense, no BatchNorm), channels / 4; trained on the RGB digits",
        ),
    ),
    "digits-vit": (
        _digits_vit,
        ModelInfo(
            "digits-vit",
            (3, 32, 32),
            10,
            "digits-rgb",
            None,
            "vision transformer, 4x4 patches, 3 pre-norm blocks (LayerNorm, 4-head attention, GELU MLP); trained "
            "on the RGB digits by examples/train_digits_vit.py",
        ),
    ),
}


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def available_models() -> list[str]:
    """The built-in digits models followed by torchvision's (ImageNet) classification architectures."""
    return [*BUILTIN_MODELS, *_torchvision_names()]


def _unknown(name: str) -> ModelError:
    choices = available_models()
    best = closest(name, choices)
    hint = f"; did you mean {best!r}?" if best else ""
    return ModelError(
        f"unknown model {name!r}{hint} (built-in: {', '.join(BUILTIN_MODELS)}, "
        f"or any torchvision.models classification name such as vgg16, resnet50)"
    )


def model_info(name: str) -> ModelInfo:
    """Input shape, classes and preprocessing of a model name accepted by :func:`builtin_model`."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name][1]
    if name in _torchvision_names():
        side = 299 if name == "inception_v3" else 224
        return ModelInfo(name, (3, side, side), 1000, None, "imagenet", f"torchvision.models.{name}")
    raise _unknown(name)


def builtin_model(name: str, weights: str | os.PathLike | None = None, **kwargs: Any):
    """A model by name, in eval mode, on the CPU.

    Args:
        name: a built-in digits network (``"digits-cnn"``, ``"digits-resnet"``, ``"digits-vgg16"``, … see
            :data:`BUILTIN_MODELS`; 3×32×32 inputs in [0, 1] from ``builtin_data("digits-rgb")``, 10 logits),
            or any ``torchvision.models`` classification name (``"vgg16"``, ``"resnet50"``, …; 3×224×224
            ImageNet-normalised inputs, see ``rulelang.sample_images``) — the architectures of Sixt et al. 2020.
        weights: a state_dict file (``.pt``/``.pth``, e.g. torchvision's ImageNet weights). Default: the
            committed trained weights of a digits model; random initialisation for a torchvision model.
        **kwargs: passed to the torchvision constructor (e.g. ``num_classes=10``); digits models take none.

    Returns:
        The ``nn.Module`` in eval mode. A digits model records its name, data set and input shape on itself
        (``rulelang_model``, ``rulelang_data``, ``rulelang_input_shape``) and refuses other inputs.

    Raises:
        ModelError: an unknown name (with a did-you-mean), options for a digits model, a missing weight file,
            or a file that is not a state_dict or does not fit the architecture.
    """
    if name in BUILTIN_MODELS:
        if kwargs:
            raise ModelError(f"{name} takes no options (got {', '.join(kwargs)})")
        model = BUILTIN_MODELS[name][0]()
        path = weights if weights is not None else weights_path(name)
        if weights is None and not Path(path).is_file():
            raise ModelError(
                f"the trained weights of {name} are missing ({path}); run examples/train_builtin_models.py"
            )
        load_weights(model, path, name)
        info = BUILTIN_MODELS[name][1]  # the model knows its data set (rulelang.models.checks)
        model.rulelang_model, model.rulelang_data, model.rulelang_input_shape = name, info.data, info.input_shape
        return model.eval()
    if name not in _torchvision_names():
        raise _unknown(name)
    import torchvision.models as tvm

    try:
        model = tvm.get_model(name, weights=None, **kwargs)
    except TypeError as e:
        raise ModelError(f"cannot build {name}: {e}") from None
    if weights is not None:
        load_weights(model, weights, name)
    return model.eval()

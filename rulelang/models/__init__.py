"""Built-in models: two small trained networks for the RGB digits (weights ship in ``weights/``) and every
torchvision architecture, with user-supplied weight files.

    model = rulelang.builtin_model("digits-cnn")                         # trained, eval mode
    model = rulelang.builtin_model("vgg16", weights="vgg16.pth")        # torchvision + your weights
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..lang.diagnostics import closest

__all__ = [
    "BUILTIN_MODELS",
    "ModelInfo",
    "WEIGHTS_DIR",
    "available_models",
    "builtin_model",
    "load_weights",
    "model_info",
    "weights_path",
]

WEIGHTS_DIR = Path(__file__).with_name("weights")


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


def weights_path(name: str) -> Path:
    """Where the committed weights of a built-in digits model live."""
    return WEIGHTS_DIR / f"{name}.pt"


def _read_state_dict(path: str | os.PathLike) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    kind = _sniff(path)
    if kind is not None:
        raise ModelError(f"weights file {path} is {kind}, not a state_dict saved with torch.save (.pt / .pth)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, pickled code ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e):  # torch's advice to unpickle arbitrary code: never the right fix here
            msg = "it holds Python objects other than tensors (rulelang loads plain state_dicts only)"
        raise ModelError(f"cannot read weights file {path}: {msg}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"weights file {path} does not hold a state_dict (a dict of tensors)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _sniff(path: Path) -> str | None:
    """What a file that cannot be a torch checkpoint is ("an empty file", "a text file"), else None."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or b"\x00" in head:  # zip, pickle, binary
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # binary, not text cut in the middle of a character
            return None
    return "a text file"


def _listing(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(model, path: str | os.PathLike, name: str | None = None):
    """Load a state_dict file into `model` (in place, returned) with a one-line :class:`ModelError` when the
    file is missing, unreadable, or does not fit the architecture (missing/unexpected keys, shape mismatch).
    Tensors are cast to the model's dtypes (float16 files load into float32 models)."""
    state = _read_state_dict(path)
    what = name or type(model).__name__
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        raise ModelError(f"weights file {path} does not fit {what}: {'; '.join(parts)}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelError(
                f"weights file {path} does not fit {what}: {k} has shape {list(state[k].shape)} "
                f"in the file but {list(v.shape)} in the model"
            )
    state = {k: state[k].to(own[k].dtype) for k in own}
    model.load_state_dict(state)
    return model


def builtin_model(name: str, weights: str | os.PathLike | None = None, **kwargs: Any):
    """A model by name, in eval mode, on the CPU.

    - ``"digits-cnn"``, ``"digits-resnet"``: the built-in networks for ``builtin_data("digits-rgb")``
      (3×32×32 inputs in [0, 1], 10 logits), with their committed trained weights, or `weights` if given.
    - any ``torchvision.models`` classification name (``"vgg16"``, ``"resnet50"``, …): the architecture with
      the state_dict in `weights` (e.g. torchvision's ImageNet ``.pth`` files), or random initialisation when
      `weights` is None. Extra keyword arguments go to the torchvision constructor (e.g. ``num_classes=10``).
      Inputs: 3×224×224, ImageNet-normalised (see ``rulelang.sample_images``).

    Raises :class:`rulelang.ModelError` for unknown names (with a did-you-mean), missing weight files and files
    that do not fit the architecture.
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

"""Built-in models: two small trained networks for the RGB digits (weights ship in ``weights/``) and every
torchvision architecture, with user-supplied weight files.

    model = rulelang.builtin_model("digits-cnn")                         # trained, eval mode
    model = rulelang.builtin_model("vgg16", weights="vgg16.pth")        # torchvision + your weights
"""

from __future__ import annotations

from .loading import WEIGHTS_DIR, load_weights, weights_path
from .registry import BUILTIN_MODELS, ModelInfo, available_models, builtin_model, model_info

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

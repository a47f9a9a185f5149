"""Weight files of models: where the built-in digits models' trained weights live and a checked state_dict
loader that explains, in one line, why a file does not fit (missing, text, pickled objects, wrong keys/shapes)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelError

__all__ = ["WEIGHTS_DIR", "load_weights", "weights_path"]

WEIGHTS_DIR = Path(__file__).with_name("weights")


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

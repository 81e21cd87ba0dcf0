"""Weights on disk: safetensors, atomic writes, and safe loading of any state dict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path``: readers never see a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_weights(path: str | Path, state: dict[str, torch.Tensor], **metadata) -> None:
    """Write a state dict as safetensors; ``metadata`` values are stored as JSON strings."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata stored by :func:`save_weights`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


class WeightsError(Exception):
    """A file is not a weights file we can read safely; the message says why and what to do."""


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from safetensors or a torch file without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        pass
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for non-weights or unsafe files
        raise WeightsError(
            f"{path} is neither a safetensors file nor a torch state dict that loads with "
            f"weights_only=True ({type(err).__name__}); convert it to safetensors first"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return obj

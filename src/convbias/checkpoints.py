"""Weights on disk: safetensors, atomic writes, and safe loading of any state dict."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

if TYPE_CHECKING:  # torch is imported where tensors are made: the jobs that only read tables
    import torch  # (measure, figures, claims) start without it, a second or two sooner


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


METADATA_KEY = "convbias"  # the one safetensors metadata key our files use


def weights_bytes(state: dict[str, torch.Tensor], **metadata) -> bytes:
    """The safetensors file of a state dict, in memory: the same bytes for the same tensors and
    ``metadata`` in every process.  ``metadata`` is stored as one JSON object with sorted keys under
    the one key ``convbias`` (safetensors writes its metadata keys in a per-process random order:
    several keys would give one state several checksums)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return save(tensors, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)} if metadata else None)


def save_weights(path: str | Path, state: dict[str, torch.Tensor], **metadata) -> str:
    """Write a state dict as safetensors (atomically); returns the file's SHA-256."""
    return write_bytes(path, weights_bytes(state, **metadata))


def write_bytes(path: str | Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns its SHA-256."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_metadata(path: str | Path) -> dict:
    """The metadata stored by :func:`save_weights` (also that of files written before it kept them
    under one key: one JSON value per key)."""
    with safe_open(str(path), framework="pt") as f:
        stored = dict(f.metadata() or {})
    ours = json.loads(stored.pop(METADATA_KEY, "{}"))
    return {**{k: json.loads(v) for k, v in stored.items()}, **ours}


class WeightsError(Exception):
    """A file is not a weights file we can read safely; the message says why and what to do."""


def load_weights(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict from safetensors or a torch file without unpickling code.

    ``keys``: only these tensors.  A safetensors file then reads nothing else (the rest of the
    file is never copied into memory); a torch file is loaded whole and the keys picked from it.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; give one weights file in it (e.g. a run's epoch010.safetensors)")
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    wanted = None if keys is None else list(keys)
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            return {k: f.get_tensor(k) for k in _pick(path, names, wanted)}
    except (SafetensorError, OSError, ValueError):
        pass
    import torch

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
    return {k: obj[k] for k in _pick(path, list(obj), wanted)}


def weights_from_bytes(data: bytes, keys: Iterable[str] | None = None, path: str | Path = "<bytes>") -> dict[str, torch.Tensor]:
    """The tensors ``keys`` (default all) of a safetensors file already in memory (``path`` names it in errors)."""
    from safetensors.torch import load

    try:
        state = load(data)
    except (SafetensorError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file ({err})") from None
    return {k: state[k] for k in _pick(Path(path), list(state), None if keys is None else list(keys))}


def _pick(path: Path, names: list[str], wanted: list[str] | None) -> list[str]:
    """``wanted`` (all ``names`` if None), after checking that the file has each of them."""
    if wanted is None:
        return names
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise WeightsError(f"{path} has no tensor {missing[0]!r} ({len(missing)} missing); "
                           f"it is not a snapshot of this model, or keeps less than asked for")
    return wanted

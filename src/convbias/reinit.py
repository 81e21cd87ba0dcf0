"""Re-initialization robustness (Zhang, Bengio & Singer): reset one conv layer to an earlier epoch.

For a run with final epoch T, every conv layer l and every source — ``rand`` (a fresh draw from
the run's init scheme) and each saved epoch e — layer l's weight and bias take the source's
values, every other layer keeps epoch T, and the test accuracy is measured.  The layers before
l are the same for every source, so the test set's activations entering l are computed once
per layer and only the rest of the network runs per source.  The test set is swept in chunks
sized from the free device memory (activations of a whole ImageNet validation set would fit in
no memory): per chunk, the activations advance layer by layer through two preallocated buffers
and every (layer, source) pair counts its correct answers on the device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import load_weights
from .devices import autocast, to_device
from .models import conv_layers, sequential_layers

Source = Mapping[str, torch.Tensor] | str | os.PathLike  # a state dict, or a weights file read lazily
RAND_SEED_OFFSET = 1_000_000  # the ``rand`` source of seed s is the init of seed s + this


def _accuracy(layers: Sequence[nn.Module], inputs: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    with torch.no_grad():
        return int(_count(layers, inputs, labels, batch)) / len(labels)


def no_sweep() -> pd.DataFrame:
    """The table of a run with nothing to sweep (it diverged: no final weights to reset layers
    of): a sweep's columns and dtypes, no rows."""
    types = {"experiment": "object", "seed": "int64", "source": "object", "layer": "int64", "name": "object",
             "accuracy": "float64", "drop": "float64", "final_accuracy": "float64"}
    return pd.DataFrame({column: pd.Series(dtype=kind) for column, kind in types.items()})


def _table(rows: list[tuple], base: float) -> pd.DataFrame:
    """(source, layer, name, accuracy) rows with the relative drop from the final accuracy ``base``."""
    frame = pd.DataFrame(rows, columns=["source", "layer", "name", "accuracy"])
    frame["drop"] = (base - frame["accuracy"]) / base if base else float("nan")
    frame["final_accuracy"] = base
    return frame


def _activation_bytes(layers: Sequence[nn.Module], x: torch.Tensor, positions: Sequence[int]) -> tuple[int, int]:
    """Per image: the largest activation entering a conv layer (what the sweep caches) and the
    largest output of any layer (what a forward pass holds), in bytes, measured on ``x``."""
    cached, largest = 0, x[0].numel() * x.element_size()
    with torch.no_grad():
        for k, layer in enumerate(layers):
            if k in positions:
                cached = max(cached, x[0].numel() * x.element_size())
            x = layer(x)
            largest = max(largest, x[0].numel() * x.element_size())
    return cached, largest


def plan_chunks(cached: int, largest: int, image: int, images: int, budget: int,
                max_batch: int = 1000) -> tuple[int, int]:
    """(chunk, batch): how many test images the sweep holds at once, and how many one forward pass takes.

    Per image of a chunk the sweep keeps two activation buffers (``cached`` bytes each: the
    activations entering layer l and those entering l + 1) and its ``image`` input; a forward pass
    of a batch holds about three layer outputs (``largest`` bytes each).  Both fit in ``budget``
    bytes: a quarter of it for the forward pass, the rest for the chunk.
    """
    batch = max(1, min(max_batch, images, budget // (4 * 3 * largest)))
    chunk = (budget - 3 * largest * batch) // (2 * cached + image)
    chunk = max(batch, min(images, chunk // batch * batch))
    return chunk, batch


def sweep_plan(model: nn.Module, sample: torch.Tensor, images: int, budget: int,
               max_batch: int = 1000) -> tuple[int, int, int]:
    """(chunk, batch, cached bytes per image) of a sweep of ``model`` over ``images`` inputs like
    ``sample`` (one, scaled) in ``budget`` bytes."""
    layers = sequential_layers(model)
    positions = [next(i for i, m in enumerate(layers) if m is conv) for _, conv in conv_layers(model)]
    cached, largest = _activation_bytes(layers, sample, positions)
    return (*plan_chunks(cached, largest, sample[0].numel() * sample.element_size(), images, budget, max_batch),
            cached)


def free_memory(device: torch.device) -> int:
    """Bytes a sweep on ``device`` may use: 70% of what is free on the GPU, or of the available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(0.7 * free)


def _buffer(flat: torch.Tensor, like: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` images of ``flat`` (bytes) viewed as a batch shaped and laid out as ``like``."""
    shape = (n, *like.shape[1:])
    count = n * like[0].numel()
    view = flat[:count * like.element_size()].view(like.dtype)[:count]
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return view.view(n, shape[2], shape[3], shape[1]).permute(0, 3, 1, 2)
    return view.view(shape)


def reinit_sweep(model: nn.Module, final: Mapping[str, torch.Tensor], sources: Mapping[str, Source],
                 inputs: torch.Tensor, labels: torch.Tensor, batch: int | None = None, chunk: int | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, precision: str = "fp32",
                 memory: int | None = None) -> pd.DataFrame:
    """Accuracy with each conv layer reset to each source's weights; one row per (source, layer).

    ``final`` is the state dict at epoch T, ``sources`` maps a source name (``rand``, ``0``, …) to a
    state dict or to a weights file, read lazily: only the layer being reset, one source at a
    time, so memory does not grow with the number of sources.  ``inputs`` are the test images on
    the model's device, already scaled, or raw if ``transform`` scales each chunk (then only one
    chunk is ever scaled).  ``chunk`` and ``batch`` default to what fits in ``memory`` bytes
    (default: :func:`free_memory` of the device).
    """
    model.load_state_dict(final)
    model.eval()
    device = next(model.parameters()).device
    layers = sequential_layers(model)
    convs = conv_layers(model)
    positions = [next(i for i, m in enumerate(layers) if m is conv) for _, conv in convs]
    kept = [{k: v.clone() for k, v in conv.state_dict().items()} for _, conv in convs]
    final_conv = [{k: v.cpu() for k, v in state.items()} for state in kept]  # compared on the host
    # a source equal to the final weights changes nothing: its accuracy is the final accuracy
    same: list[list[bool | None]] = [[None] * len(sources) for _ in convs]
    scale = transform if transform is not None else (lambda x: x)
    with autocast(device, precision):
        planned_chunk, planned_batch, cached = sweep_plan(
            model, scale(inputs[:1]), len(labels), free_memory(device) if memory is None else memory, batch or 1000)
    chunk, batch = chunk or planned_chunk, batch or planned_batch
    # two activation buffers for a whole chunk, written in place chunk after chunk
    buffers = [torch.empty(chunk * cached, dtype=torch.uint8, device=device) for _ in range(2)]
    correct = torch.zeros(len(convs), len(sources), dtype=torch.long, device=device)
    base_correct = torch.zeros((), dtype=torch.long, device=device)
    starts = range(0, len(labels), chunk)
    with torch.no_grad(), autocast(device, precision), \
            tqdm(total=len(starts) * len(convs), desc=f"reinit (chunks of {chunk})", unit="layer",
                 disable=None) as progress:  # on a terminal only
        for start in starts:
            x = scale(inputs[start:start + chunk])
            y = labels[start:start + chunk]
            base_correct += _count(layers, x, y, batch)
            acts, done = x, 0
            for i, ((name, conv), pos) in enumerate(zip(convs, positions)):
                acts = _advance(layers[done:pos], acts, buffers[i % 2], batch)  # entering layer i, once per chunk
                done = pos
                for j, source in enumerate(sources.values()):
                    value = layer_state(source, name, list(kept[i]))
                    if same[i][j] is None:
                        same[i][j] = all(torch.equal(value[k].cpu(), v) for k, v in final_conv[i].items())
                    if not same[i][j]:
                        conv.load_state_dict({k: to_device(v, device) for k, v in value.items()})
                        correct[i, j] += _count(layers[pos:], acts, y, batch)
                conv.load_state_dict(kept[i])
                progress.update()
    base = int(base_correct) / len(labels)
    counts = correct.tolist()  # the only wait for the device
    rows = []
    for i, (name, _) in enumerate(convs):
        for j, source in enumerate(sources):
            rows.append((source, i + 1, name, base if same[i][j] else counts[i][j] / len(labels)))
    table = _table(rows, base)
    table.attrs.update(chunk=chunk, batch=batch)  # how the sweep was cut (reported by bench/gpu_check.py)
    return table


def layer_state(source: Source, layer: str, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` (``weight``, ``bias``) of conv ``layer`` in ``source``: a state dict,
    or a weights file of which nothing else is read."""
    names = [f"{layer}.{k}" for k in keys]
    state = source if isinstance(source, Mapping) else load_weights(source, names)
    return {k: state[n] for k, n in zip(keys, names)}


def _count(layers: Sequence[nn.Module], inputs: torch.Tensor, labels: torch.Tensor, batch: int) -> torch.Tensor:
    """Correct answers of ``layers`` on ``inputs``, as a device tensor (no wait for the device)."""
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for i in range(0, len(labels), batch):
        x = inputs[i:i + batch]
        for layer in layers:
            x = layer(x)
        correct += (x.argmax(1) == labels[i:i + batch]).sum()
    return correct


def _advance(layers: Sequence[nn.Module], inputs: torch.Tensor, flat: torch.Tensor, batch: int) -> torch.Tensor:
    """``layers`` applied to ``inputs`` batch by batch, written into the byte buffer ``flat``."""
    if not layers:
        return inputs
    out = None
    for i in range(0, len(inputs), batch):
        x = inputs[i:i + batch]
        for layer in layers:
            x = layer(x)
        if out is None:
            out = _buffer(flat, x, len(inputs))
        out[i:i + len(x)].copy_(x)
    return out


def naive_sweep(model: nn.Module, final: Mapping[str, torch.Tensor], sources: Mapping[str, Mapping[str, torch.Tensor]],
                inputs: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> pd.DataFrame:
    """The same sweep with a full forward pass per (layer, source): the reference for tests and benchmarks."""
    model.load_state_dict(final)
    model.eval()
    layers = sequential_layers(model)
    base = _accuracy(layers, inputs, labels, batch)
    rows = []
    for number, (name, conv) in enumerate(conv_layers(model), 1):
        for source, state in sources.items():
            layer = {key: state[key] for key in (f"{name}.weight", f"{name}.bias") if key in state}
            model.load_state_dict({**final, **layer})
            acc = _accuracy(layers, inputs, labels, batch)
            rows.append((source, number, name, acc))
    model.load_state_dict(final)
    return _table(rows, base)

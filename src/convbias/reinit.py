"""Re-initialization robustness (Zhang, Bengio & Singer): reset one conv layer to an earlier epoch.

For a run with final epoch T, every conv layer l and every source — ``rand`` (a fresh draw from
the run's init scheme) and each saved epoch e — layer l's weight and bias take the source's
values, every other layer keeps epoch T, and the test accuracy is measured.  The layers before
l are the same for every source, so the test set's activations entering l are computed once
per layer and only the rest of the network runs per source.  The test set is swept in chunks
(activations of a whole ImageNet validation set would not fit in any memory): per chunk, the
activations advance layer by layer and every (layer, source) pair counts its correct answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .models import conv_layers, sequential_layers

RAND_SEED_OFFSET = 1_000_000  # the ``rand`` source of seed s is the init of seed s + this


def _correct(layers: Sequence[nn.Module], inputs: torch.Tensor, labels: torch.Tensor, batch: int) -> int:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            x = inputs[i : i + batch]
            for layer in layers:
                x = layer(x)
            correct += int((x.argmax(1) == labels[i : i + batch]).sum())
    return correct


def _accuracy(layers: Sequence[nn.Module], inputs: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    return _correct(layers, inputs, labels, batch) / len(labels)


def _forward(layers: Sequence[nn.Module], inputs: torch.Tensor, batch: int) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            x = inputs[i : i + batch]
            for layer in layers:
                x = layer(x)
            outs.append(x)
    return torch.cat(outs)


def _table(rows: list[tuple], base: float) -> pd.DataFrame:
    """(source, layer, name, accuracy) rows with the relative drop from the final accuracy ``base``."""
    frame = pd.DataFrame(rows, columns=["source", "layer", "name", "accuracy"])
    frame["drop"] = (base - frame["accuracy"]) / base if base else float("nan")
    frame["final_accuracy"] = base
    return frame


def reinit_sweep(model: nn.Module, final: Mapping[str, torch.Tensor], sources: Mapping[str, Mapping[str, torch.Tensor]],
                 inputs: torch.Tensor, labels: torch.Tensor, batch: int = 1000, chunk: int = 4096,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> pd.DataFrame:
    """Accuracy with each conv layer reset to each source's weights; one row per (source, layer).

    ``final`` is the state dict at epoch T, ``sources`` maps a source name (``rand``, ``0``, …) to a
    state dict; ``inputs`` are the test images on the model's device, already scaled, or raw if
    ``transform`` scales each chunk of ``chunk`` images (then only one chunk is ever scaled).
    """
    model.load_state_dict(final)
    model.eval()
    layers = sequential_layers(model)
    convs = conv_layers(model)
    positions = [next(i for i, m in enumerate(layers) if m is conv) for _, conv in convs]
    kept = [{k: v.clone() for k, v in conv.state_dict().items()} for _, conv in convs]
    # every source's conv weights moved to the device once (not once per chunk)
    values = [[{k: state[f"{name}.{k}"].to(v.device) for k, v in kept[i].items()} for state in sources.values()]
              for i, (name, _) in enumerate(convs)]
    # a source equal to the final weights changes nothing: its accuracy is the final accuracy
    same = [[all(torch.equal(value[k], v) for k, v in kept[i].items()) for value in values[i]]
            for i in range(len(convs))]
    correct = torch.zeros(len(convs), len(sources), dtype=torch.long)
    base_correct = 0
    starts = range(0, len(labels), chunk)
    with tqdm(total=len(starts) * len(convs), desc="reinit", unit="layer") as progress:
        for start in starts:
            x = inputs[start:start + chunk]
            x = transform(x) if transform is not None else x
            y = labels[start:start + chunk]
            base_correct += _correct(layers, x, y, batch)
            acts, done = x, 0
            for i, ((name, conv), pos) in enumerate(zip(convs, positions)):
                acts = _forward(layers[done:pos], acts, batch)  # activations entering layer i, once per chunk
                done = pos
                for j in range(len(sources)):
                    if not same[i][j]:
                        conv.load_state_dict(values[i][j])
                        correct[i, j] += _correct(layers[pos:], acts, y, batch)
                conv.load_state_dict(kept[i])
                progress.update()
    base = base_correct / len(labels)
    rows = []
    for i, (name, _) in enumerate(convs):
        for j, source in enumerate(sources):
            rows.append((source, i + 1, name, base if same[i][j] else int(correct[i, j]) / len(labels)))
    return _table(rows, base)


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

"""Re-initialization sweep: activations cached per layer (ours) vs a full forward per (layer, source).

A VGG19-shaped model (width multiplier, 32×32×3 inputs, 10 classes) with random "epochs"
(independent initializations standing in for saved checkpoints), the same test images for both
sweeps; prints seconds of each, the ratio, and the bound the conv multiply-accumulates allow:
  Σ_l MACs(all layers) / Σ_l MACs(layers l…L)   (2.03× for VGG19 at 32×32).
Both sweeps get the same sources, none equal to the final weights (ours also skips the final
epoch in the workflow, which only adds to its lead).  Usage:
  .venv/bin/python bench/reinit.py [--width 0.25] [--images 1000] [--sources 3] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from convbias.specs import ModelSpec
from convbias.models import build_model, conv_layers, initialize, sequential_layers
from convbias.reinit import naive_sweep, reinit_sweep


def conv_macs(model: nn.Module, inputs: torch.Tensor) -> list[int]:
    """Multiply-accumulates of each conv layer for one image, in forward order."""
    macs = []

    def hook(module, _, out):
        k = module.weight[0].numel()  # in_channels/groups × kh × kw
        macs.append(k * out[0].numel())

    handles = [conv.register_forward_hook(hook) for _, conv in conv_layers(model)]
    with torch.no_grad():
        x = inputs[:1]
        for layer in sequential_layers(model):
            x = layer(x)
    for h in handles:
        h.remove()
    return macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=3, help="saved epochs to reset each layer to")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of both sweeps")
    args = parser.parse_args()
    device = torch.device(args.device)
    spec = ModelSpec("vgg19", width=args.width, dropout=0.0)

    def draw(seed):
        torch.manual_seed(seed)
        return initialize(build_model(spec, 3, 10, 32)).state_dict()

    final = draw(0)
    sources = {str(e): draw(e + 1) for e in range(args.sources)}
    model = build_model(spec, 3, 10, 32).to(device)
    inputs = torch.randn(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.randint(0, 10, (args.images,), generator=torch.Generator().manual_seed(1)).to(device)
    final = {k: v.to(device) for k, v in final.items()}
    sources = {s: {k: v.to(device) for k, v in state.items()} for s, state in sources.items()}

    macs = conv_macs(model.eval(), inputs)
    bound = len(macs) * sum(macs) / sum(sum(macs[i:]) for i in range(len(macs)))
    reinit_sweep(model, final, {"0": sources["0"]}, inputs[:args.batch], labels[:args.batch], args.batch)  # warm-up
    seconds: dict[str, list[float]] = {"cached": [], "naive": []}
    tables = {}
    for round_ in range(args.repeats):  # interleaved, the side that goes first alternating
        sides = [("cached", reinit_sweep), ("naive", naive_sweep)]
        for name, sweep in sides if round_ % 2 == 0 else sides[::-1]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            tables[name] = sweep(model, final, sources, inputs, labels, args.batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    same = tables["cached"]["accuracy"].tolist() == tables["naive"]["accuracy"].tolist()
    ratios = [n / c for c, n in zip(seconds["cached"], seconds["naive"])]  # per round: side by side
    print(f"VGG19 width {args.width}, {len(macs)} conv layers, {args.images} images, {args.sources} sources, "
          f"device {device}, {torch.get_num_threads()} threads, {args.repeats} interleaved rounds")
    for name in ("cached", "naive"):
        print(f"{name} sweep  " + "  ".join(f"{t:7.2f} s" for t in seconds[name]))
    print(f"ratio naive/cached: min {min(ratios):.2f}x  median {statistics.median(ratios):.2f}x   "
          f"(conv-MAC bound {bound:.2f}x)   identical accuracies: {same}")


if __name__ == "__main__":
    main()

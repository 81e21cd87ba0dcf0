"""Peak memory of a re-initialization sweep: sources read lazily (ours) vs every epoch loaded first.

Writes N "epoch" files of a VGG19-shaped model (32×32×3 inputs, 10 classes, full snapshots:
every tensor) to a temporary folder, then sweeps with 10 and with N source epochs, each sweep
in its own process, and prints each process's peak resident memory (``ru_maxrss``).  Ours
(``reinit_sweep`` given the files) reads one layer of one source at a time; the baseline
loads every source's state dict before sweeping (what the reinit job did before).  The runs of
both sides are interleaved and repeated; the table gives min and median per case and the
ratios N-source / 10-source (target for ours: ≤ 1.2).  Usage:
  .venv/bin/python bench/reinit_memory.py [--width 0.25] [--epochs 100] [--images 64] [--repeats 3]
  .venv/bin/python bench/reinit_memory.py --width 1 --head torchvision --epochs 10 --repeats 1   # the paper's VGG19
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from convbias.checkpoints import load_weights, save_weights
from convbias.models import build_model, initialize
from convbias.reinit import reinit_sweep
from convbias.specs import ModelSpec


def model_spec(width: float, head: str) -> ModelSpec:
    return ModelSpec("vgg19", width=width, head=head, dropout=0.0)


def child(folder: Path, width: float, head: str, sources: int, images: int, lazy: bool) -> None:
    """One sweep; prints its peak resident memory in MB as JSON."""
    torch.set_num_threads(1)
    model = build_model(model_spec(width, head), 3, 10, 32)
    final = load_weights(folder / "final.safetensors")
    files = {str(e): folder / f"epoch{e:03d}.safetensors" for e in range(sources)}
    chosen = files if lazy else {name: load_weights(path) for name, path in files.items()}
    inputs = torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (images,), generator=torch.Generator().manual_seed(1))
    reinit_sweep(model, final, chosen, inputs, labels, batch=images)
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak(folder: Path, width: float, head: str, sources: int, images: int, lazy: bool) -> float:
    cmd = [sys.executable, __file__, "--child", str(folder), "--width", str(width), "--head", head,
           "--sources", str(sources), "--images", str(images)] + (["--eager"] if not lazy else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=100, help="source epochs of the large sweep (the small: 10)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--head", default="compact", help="compact (512 wide) or torchvision (the paper study's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sources", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.width, args.head, args.sources, args.images, not args.eager)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_model(model_spec(args.width, args.head), 3, 10, 32)
        for e in range(args.epochs):
            torch.manual_seed(e)
            save_weights(folder / f"epoch{e:03d}.safetensors", initialize(model).state_dict())
        torch.manual_seed(10_000)
        save_weights(folder / "final.safetensors", initialize(model).state_dict())
        size = (folder / "epoch000.safetensors").stat().st_size / 2**20
        cases = [(lazy, n) for lazy in (True, False) for n in sorted({10, args.epochs})]
        peaks: dict[tuple[bool, int], list[float]] = {case: [] for case in cases}
        for _ in range(args.repeats):  # interleaved: every case once per round
            for case in cases:
                peaks[case].append(peak(folder, args.width, args.head, case[1], args.images, case[0]))
    print(f"VGG19 width {args.width}, {args.head} head, {size:.1f} MB per epoch file, {args.images} test images, "
          f"{args.repeats} interleaved rounds; peak resident memory (MB), min / median")
    print(f"{'sources':>8} {'lazy (ours)':>18} {'all loaded':>18}")
    for n in sorted({10, args.epochs}):
        cells = [f"{min(peaks[(lazy, n)]):.0f} / {statistics.median(peaks[(lazy, n)]):.0f}" for lazy in (True, False)]
        print(f"{n:>8} {cells[0]:>18} {cells[1]:>18}")
    if args.epochs != 10:
        for lazy, name in ((True, "lazy (ours)"), (False, "all loaded")):
            small, large = peaks[(lazy, 10)], peaks[(lazy, args.epochs)]
            ratios = sorted(b / a for a, b in zip(small, large))  # per round: measured side by side
            print(f"{name}: {args.epochs} vs 10 sources, ratio min {ratios[0]:.2f} median {statistics.median(ratios):.2f}"
                  + ("  (target ≤ 1.2)" if lazy else ""))


if __name__ == "__main__":
    main()

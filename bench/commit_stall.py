"""How long training stops for an epoch's commit: in line (the baseline) vs written in the background (ours).

A commit writes the epoch's weights and SGD's momentum as safetensors, hashes them and writes
the progress file (:meth:`convbias.runs.work.WorkFolder.commit_state`).  In line, the training loop
waits for all of it; with :class:`convbias.runs.commits.BackgroundCommits` it waits only for the copy
of the tensors to the host (:func:`convbias.runs.commits.training_state`) — the next epoch trains while
a thread writes.  A third side: an epoch between resume points (``resume_every``), which under
``--snapshots conv`` (the paper study's) writes its conv tensors only, in the background.
Measured on the paper's VGG19 (torchvision head, 32×32×3, 10 classes: 558 MB
of weights and as much momentum), on the host, in one process; both sides interleaved, repeated;
a fresh work folder per commit (epoch 1 of a new run).  Prints the time the training thread is
held per commit (min and median), the ratio, and how long the background commit takes to land.
Usage:
  .venv/bin/python bench/commit_stall.py [--width 1] [--repeats 3] [--snapshots conv]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from convbias.models import build_model, initialize
from convbias.runs.work import WorkFolder
from convbias.specs import ModelSpec
from convbias.runs.commits import BackgroundCommits


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0, help="VGG19 width multiplier (1: the paper's)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of both sides")
    parser.add_argument("--snapshots", default="conv", choices=["full", "conv"], help="the run's snapshot policy")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(ModelSpec("vgg19", width=args.width, head="torchvision", dropout=0.0), 3, 10, 32)
    initialize(model, "torchvision_vgg")
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for p in model.parameters():  # momentum buffers, as after a training step
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    megabytes = 2 * sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    meta = {"seed": 0, "conv_layers": [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]}
    history = [{"epoch": 0}]
    held = {"in line": [], "background": [], "snapshot": []}
    landed = {"background": [], "snapshot": []}
    with tempfile.TemporaryDirectory(prefix="convbias-bench-") as tmp:
        for r in range(args.repeats):
            sides = ["in line", "background", "snapshot"]
            for side in sides[r % 3:] + sides[:r % 3]:
                work = WorkFolder(Path(tmp) / f"{side.replace(' ', '-')}{r}", "bench")
                if side == "snapshot":  # its resume point, not timed
                    work.commit(0, model, optimizer, history, meta, args.snapshots)
                with BackgroundCommits() as commits:
                    start = time.perf_counter()
                    if side == "in line":
                        work.commit(1, model, optimizer, history, meta, args.snapshots)
                    else:
                        commits.submit(work, 1, model, optimizer, history, meta, args.snapshots,
                                       resume=side == "background")
                    held[side].append(time.perf_counter() - start)
                    commits.wait()
                    if side in landed:
                        landed[side].append(time.perf_counter() - start)
                # committed, files checked; a snapshot leaves the run resuming from epoch 0
                assert work.last_epoch(clear=False) == (0 if side == "snapshot" else 1) and work.committed == 1
    print(f"VGG19 width {args.width}, {megabytes:.0f} MB of weights and momentum per commit, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved rounds")
    for side, times in held.items():
        print(f"{side:<11} training held {min(times):7.3f} s min  {statistics.median(times):7.3f} s median")
    for side, times in landed.items():
        print(f"{side} commit lands after {min(times):.3f} s min, {statistics.median(times):.3f} s median")
    for side in ("background", "snapshot"):
        ratios = sorted(a / b for a, b in zip(held["in line"], held[side]))
        print(f"held in line / held by a {side} commit: min {ratios[0]:.1f}x  median {statistics.median(ratios):.1f}x")


if __name__ == "__main__":
    main()

"""k training runs side by side on one GPU: images/s of each and in all, for k = 1, 2, 4.

What ``runs_per_gpu`` (config/README.md) is for: at 32×32 one VGG19 run's training step is bound
by the host launching kernels (the GPU check: busy 41 % in tf32, 23 % in bf16 on an H200), so a
second process could fill the gaps.  Whether it does — and from which k the GPU is saturated —
is measured here: k worker processes, each fig 7's VGG19 (torchvision head, its init) training
with SGD on batches of 128 already on the device (the training step only: no loader, no
augmentation), start together and count steps for ``--seconds``; the aggregate images/s is the
sum.  Every k of ``--ks`` once per round, rounds interleaved (the order rotates), ``--repeats``
rounds; prints min and median per k and the ratio to k = 1.  Usage:
  python bench/gpu_share.py --precision tf32 [--ks 1 2 4 --seconds 20 --repeats 3]
  .venv/bin/python bench/gpu_share.py --device cpu --width 0.0625 --seconds 1 --ks 1 2 --repeats 1   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    """One training process: warm up, say ready, wait for ``go``, train ``--seconds``, print img/s."""
    import torch
    import torch.nn.functional as F

    from convbias.devices import autocast, resolve_device, set_precision, use_device
    from convbias.models import build_model, initialize
    from convbias.specs import ModelSpec

    device = resolve_device(args.device)
    use_device(device)
    set_precision(args.precision)
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(args.rank)
    model = build_model(ModelSpec("vgg19", width=args.width, head="torchvision", dropout=0.5), 3, 10, 32)
    initialize(model, "torchvision_vgg")
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step():
        with autocast(device, args.precision):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    Path(args.ready).touch()
    go = Path(args.go)
    while not go.exists():
        time.sleep(0.001)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for _ in range(10):  # between looks at the clock
            step()
        steps += 10
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    print(json.dumps({"rank": args.rank, "images_per_s": steps * args.batch / seconds}), flush=True)


def side_by_side(args, k: int, scratch: Path) -> list[float]:
    """Images/s of each of ``k`` workers started together."""
    folder = Path(tempfile.mkdtemp(prefix=f"k{k}-", dir=scratch))
    go = folder / "go"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--rank", str(r), "--ready", str(folder / f"ready{r}"),
                               "--go", str(go), "--device", args.device, "--precision", args.precision,
                               "--width", str(args.width), "--batch", str(args.batch), "--warmup", str(args.warmup),
                               "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
             for r in range(k)]
    deadline = time.time() + 600
    while not all((folder / f"ready{r}").exists() for r in range(k)):
        if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                p.kill()
            sys.exit(f"a worker of k={k} failed or never got ready")
        time.sleep(0.01)
    go.touch()
    rates = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode:
            sys.exit(f"a worker of k={k} failed (exit {p.returncode})")
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4], help="runs side by side")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--width", type=float, default=1.0, help="VGG19's width multiplier (1: fig 7's)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=30, help="steps before the clock starts (cuDNN's search)")
    parser.add_argument("--seconds", type=float, default=20.0, help="each worker's timed window")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--json", help="write every measurement to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    measured = {k: [] for k in args.ks}
    with tempfile.TemporaryDirectory(prefix="convbias-gpu-share-") as scratch:
        for r in range(args.repeats):
            order = args.ks[r % len(args.ks):] + args.ks[:r % len(args.ks)]
            for k in order:
                measured[k].append(side_by_side(args, k, Path(scratch)))
    print(f"VGG19 width {args.width}, batch {args.batch}, {args.precision} on {args.device}; "
          f"{args.seconds:g} s windows, {args.repeats} interleaved rounds")
    print(f"{'k':>3} {'img/s in all: min':>18} {'median':>10} {'per run: median':>16} {'in all / k=1 (medians)':>23}")
    base = statistics.median(sum(rates) for rates in measured[args.ks[0]])
    for k, rounds in measured.items():
        totals = [sum(rates) for rates in rounds]
        per_run = statistics.median(rate for rates in rounds for rate in rates)
        print(f"{k:>3} {min(totals):>18.0f} {statistics.median(totals):>10.0f} {per_run:>16.0f} "
              f"{statistics.median(totals) / base:>22.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "images_per_s": {str(k): v for k, v in measured.items()}},
                                              indent=1))


if __name__ == "__main__":
    main()

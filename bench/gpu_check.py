"""Is the GPU kept busy? VGG19 trained from an FFCV file vs the same steps on data already on the device.

1. Converts a CIFAR-shaped synthetic dataset (32×32×3) to FFCV and trains VGG19 on it with the
   project's training loop (``train_run``) for two epochs; the second epoch's images/s is the
   loader-fed rate.
2. Runs the same training step (same model, batch, shift/flip/scaling on the device, SGD) on a
   batch that already sits on the device: the rate without any loading.
3. Prints the ratio (1.0 = the loader costs nothing; target ≥ 0.95) and the peak GPU memory.
4. Checks one SGD step on the CPU against the same step on the device (same initialization from
   the same seed, TF32 off): loss and updated weights must agree to float32 tolerance.

Usage (≤ 5 minutes on one GPU):  bash bench/gpu_check.sh  [--images 50000] [--width 1.0]
A CPU smoke run:  .venv/bin/python bench/gpu_check.py --device cpu --images 1000 --width 0.125
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from convbias.config import ModelSpec, TrainSpec
from convbias.data.convert import convert
from convbias.data.ffcv_io import BatchTransform
from convbias.train import init_model, train_run


def on_device_rate(spec: TrainSpec, meta, device: torch.device, steps: int) -> float:
    """Images/s of the training step alone: uint8 batches already on ``device``."""
    model = init_model(spec, meta, 0).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    transform = BatchTransform(meta, device, reuse_output=True)
    h, w, c = meta.shape
    x = torch.randint(0, 256, (spec.batch_size, h, w, c), dtype=torch.uint8, device=device)
    y = torch.randint(0, meta.num_classes, (spec.batch_size,), device=device)
    generator = torch.Generator().manual_seed(0)

    def step():
        out = model(transform(x, generator)).float()
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return (out.detach().argmax(1) == y).sum()

    for _ in range(10):  # warm-up: cudnn autotuning, allocator
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * spec.batch_size / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_vs_device_step(spec: TrainSpec, meta, device: torch.device) -> tuple[float, float, float]:
    """(|Δloss|, max |Δweight| after one SGD step, max |Δweight at init|): CPU vs ``device``."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    h, w, c = meta.shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, h, w, c), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, meta.num_classes, (32,), generator=gen)
    results = []
    for dev in (torch.device("cpu"), device):
        model = init_model(spec, meta, 7).to(dev).train()
        init = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                    weight_decay=spec.weight_decay)
        loss = F.cross_entropy(model(BatchTransform(meta, dev)(x.to(dev))), y.to(dev))
        loss.backward()
        optimizer.step()
        results.append((loss.item(), init, {k: v.detach().cpu() for k, v in model.state_dict().items()}))
    (l0, i0, w0), (l1, i1, w1) = results
    return (abs(l0 - l1), max((w0[k] - w1[k]).abs().max().item() for k in w0),
            max((i0[k] - i1[k]).abs().max().item() for k in i0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=50000, help="training images of the FFCV file")
    parser.add_argument("--width", type=float, default=1.0, help="VGG19 width multiplier")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200, help="steps of the on-device measurement")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible; run on a GPU machine or pass --device cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {args.workers} loader workers")

    work = Path(tempfile.mkdtemp(prefix="convbias-gpu-check-"))
    data = {"source": "synthetic", "synthetic": {"n_train": args.images, "n_test": max(10, args.images // 5),
                                                 "size": 32, "channels": 3},
            "pad": 0, "val_fraction": 0.1, "split_seed": 0, "hflip": True, "pixel_range": "standardize"}
    meta = convert("gpu-check", data, work / "train.beton", work / "test.beton", work / "meta.json", args.workers)
    spec = TrainSpec(model=ModelSpec("vgg19", width=args.width, dropout=0.0), lr=0.01, batch_size=args.batch_size,
                     epochs=2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history = train_run(spec, 0, meta, work / "train.beton", work / "test.beton", work / "run", work / "work",
                        device=str(device), threads=args.workers)
    fed = float(history["images_per_second"].iloc[-1])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    alone = on_device_rate(spec, meta, device, args.steps)
    print(f"VGG19 width {args.width}, batch {args.batch_size}, 32x32x3, fp32:")
    print(f"  FFCV-fed training   {fed:10.0f} img/s   (epoch 2 of train_run, {len(meta.train_indices())} images)")
    print(f"  data on the device  {alone:10.0f} img/s   ({args.steps} steps)")
    print(f"  ratio               {fed / alone:10.3f}     (target >= 0.95)")
    print(f"  peak GPU memory     {peak:10.2f} GiB")
    print(f"  final test accuracy {history['test_acc'].iloc[-1]:10.3f}")
    if device.type != "cpu":
        dloss, dweight, dinit = cpu_vs_device_step(spec, meta, device)
        ok = dinit == 0 and dloss < 1e-4 and dweight < 1e-5
        print(f"CPU vs {device.type} step: |dloss| {dloss:.2e}, max |dweight| {dweight:.2e}, "
              f"init identical: {dinit == 0} -> {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()

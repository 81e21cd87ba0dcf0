"""The GPU check: is the GPU kept busy, is "fp32" IEEE float32, and does everything fit?

On one GPU (on the CPU as a smoke test, where the GPU figures stay empty):
1. precision: a convolution and a matmul against float64 under `fp32` (IEEE: relative error
   ~1e-7) and `tf32` (~1e-4); one SGD step on the CPU vs the device in fp32 (same init).
2. VGG19 on CIFAR-shaped data (32×32×3) through the project's own training loop (`train_run`,
   fed by FFCV) in fp32, tf32 and bf16: images/s of epoch 2; GPU-busy fraction = kernel time per
   step (from a profiled run) × steps / the unprofiled epoch's wall time; host synchronizations
   per step inside the loop (profiler: cuda*Synchronize calls; `torch.cuda.set_sync_debug_mode`:
   warnings raised inside `train_epoch`); peak GPU memory.
3. VGG19 at 224×224 (ImageNet): images/s of the training step on batches already on the device,
   per precision, against the FFCV JPEG pipeline (random resized crop 224, to the device) with
   8 threads (the CPUs a GPU job gets) and with every CPU: the loader must outrun the GPU.
4. The re-initialization sweep at 224²: VGG19 (torchvision head), chunks sized from free device
   memory; chunk, batch, peak memory, seconds.

Usage (one GPU, ≤ 5 min):  bash bench/gpu_check.sh   (or: python bench/gpu_check.py --out result.json)
Offline GPU machine without FFCV:  bash bench/device_bundle.sh here, then bash bench/device_check.sh there.
CPU smoke run:  .venv/bin/python bench/gpu_check.py --device cpu --small
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convbias.specs import ModelSpec, TrainSpec
from convbias.data.convert import IMAGENET_MEAN, IMAGENET_STD, convert
from convbias.specs import DatasetSpec
from convbias.data.dataset import DatasetMeta
from convbias.data.loaders import global_batches, make_loader, one_ahead, write_samples
from convbias.data.transform import BatchTransform
from convbias.devices import PRECISIONS, precision, set_precision, use_device
from convbias.reinit import free_memory, reinit_sweep, sweep_plan
from convbias.resources import model_size
from convbias.models import init_model
from convbias.train import train_epoch, train_run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --- 1. precision ------------------------------------------------------------------------------

def precision_errors(device: torch.device) -> dict:
    """Relative error of a conv and a matmul against float64, under fp32 and tf32."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(32, 64, 28, 28, generator=gen), torch.randn(128, 64, 3, 3, generator=gen)
    a, b = torch.randn(1024, 1024, generator=gen), torch.randn(1024, 1024, generator=gen)
    conv_ref, mm_ref = F.conv2d(x.double(), w.double(), padding=1), a.double() @ b.double()
    out = {}
    for name in ("fp32", "tf32"):
        with precision(name):
            conv = F.conv2d(x.to(device), w.to(device), padding=1).double().cpu()
            mm = (a.to(device) @ b.to(device)).double().cpu()
        out[name] = {"conv": ((conv - conv_ref).norm() / conv_ref.norm()).item(),
                     "matmul": ((mm - mm_ref).norm() / mm_ref.norm()).item()}
    return out


def cpu_vs_device_step(spec: TrainSpec, meta, device: torch.device) -> tuple:
    """(|Δloss|, max |Δweight| after one SGD step, max |Δweight at init|, max |update| on the CPU,
    the largest per-tensor ratio max |Δweight| / max |update|, that tensor's name): CPU vs
    ``device``, fp32.  The step's difference is judged against the update's size."""
    h, w, c = meta.shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, h, w, c), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, meta.num_classes, (32,), generator=gen)
    results = []
    with precision("fp32"):
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
            max((i0[k] - i1[k]).abs().max().item() for k in i0),
            max((w0[k] - i0[k]).abs().max().item() for k in w0),
            *max(((w0[k] - w1[k]).abs().max().item() / max((w0[k] - i0[k]).abs().max().item(), 1e-30), k)
                 for k in w0))  # the tensor whose update differs most, relative to its own update


def augment_on_device(device: torch.device) -> dict:
    """The training batch transform on the device, with the epoch's draws copied there up front,
    against the host's fused kernel with the same draws: max |difference| (must be 0)."""
    meta = DatasetMeta("m", 10, (32, 32, 3), 256, 10, 0.1, 0, True, "standardize", (120.0,) * 3, (60.0,) * 3)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (256, 32, 32, 3), dtype=torch.uint8, generator=gen)
    sizes = [128, 128]
    host = BatchTransform(meta, "cpu").draw_epoch(sizes, torch.Generator().manual_seed(5))
    on_device = BatchTransform(meta, device).draw_epoch(sizes, torch.Generator().manual_seed(5), device)
    diff = 0.0
    for k, (a, b) in enumerate(zip(host, on_device)):
        batch = x[128 * k:128 * (k + 1)]
        want = BatchTransform(meta, "cpu")(batch, draws=a)
        got = BatchTransform(meta, device)(batch.to(device), draws=b).cpu()
        diff = max(diff, (want - got).abs().max().item())
    return {"max_abs_diff": diff, "shifts_flips_equal": all(
        torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu()) for a, b in zip(host, on_device))}


# --- 2. the training loop on CIFAR-shaped data -----------------------------------------------

def train_flops(spec: TrainSpec, channels: int, classes: int, size: int, images_per_s: float) -> float:
    """The training rate in the unit of `convbias.resources` (6 FLOPs per multiply-accumulate and image)."""
    return 6 * model_size(spec, channels, classes, size).macs * images_per_s


def loop_profile(prof, steps: int) -> dict:
    """Kernel time per step and synchronizations per step inside the last epoch's loop."""
    from torch.autograd import DeviceType

    events = list(prof.events())
    loop = [e for e in events if e.name == "convbias.train_epoch" and e.device_type == DeviceType.CPU][-1]
    start, end = loop.time_range.start, loop.time_range.end
    syncs = Counter(e.name for e in events if "Synchronize" in e.name and e.device_type == DeviceType.CPU
                    and start <= e.time_range.start <= end)
    # the device finishes the epoch by the first device synchronize after the loop
    done = min((e.time_range.end for e in events if e.name == "cudaDeviceSynchronize" and e.time_range.start >= end),
               default=end)
    spans = sorted((max(e.time_range.start, start), min(e.time_range.end, done)) for e in events
                   if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
                   and e.time_range.end > start and e.time_range.start < done)
    busy, reach = 0.0, start
    for a, b in spans:  # the union of the device's activity
        if b > reach:
            busy += b - max(a, reach)
            reach = b
    return {"kernel_ms_per_step": busy / 1000 / steps, "syncs_per_step": {k: v / steps for k, v in syncs.items()}}


def syncs_in_loop(run) -> tuple[object, int]:
    """Run ``run()`` under ``torch.cuda.set_sync_debug_mode('warn')``; count warnings raised inside train_epoch."""
    found = []

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message) and any(f.name == "train_epoch" for f in traceback.extract_stack()):
            found.append(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return result, len(found)


def cifar_loop(args, device: torch.device, work: Path) -> list[dict]:
    def dataset(name, n):
        data = {"source": "synthetic", "synthetic": {"n_train": n, "n_test": max(10, n // 10), "size": 32, "channels": 3},
                "pad": 0, "val_fraction": 0.1, "split_seed": 0, "hflip": True, "pixel_range": "standardize"}
        meta = convert(name, DatasetSpec.from_config(data),
                       work / f"{name}-train.beton", work / f"{name}-test.beton", work / f"{name}.json",
                       args.workers)
        return meta, len(global_batches(len(meta.train_indices()), args.batch_size))

    timed, steps = dataset("timed", args.images)
    profiled, profiled_steps = dataset("profiled", max(args.images // 4, 4 * args.batch_size))  # short traces
    rows, epochs = [], 1 if args.small else 2  # the smoke run: each variant's code path, once
    for variant in (*PRECISIONS, "tf32-per-step-copies"):
        name = variant.split("-")[0]
        # the loop as it was: shifts and flips drawn on the host and copied before every step
        per_step = variant.endswith("copies")
        original = BatchTransform.draw_epoch
        if per_step:
            BatchTransform.draw_epoch = lambda self, sizes, gen, device="cpu": original(self, sizes, gen, "cpu")
        spec = TrainSpec(model=ModelSpec("vgg19", width=args.width, dropout=0.0), lr=0.01,
                         batch_size=args.batch_size, epochs=epochs, precision=name)
        run = lambda meta: train_run(spec, 0, meta, work / f"{meta.name}-train.beton",  # noqa: E731
                                     work / f"{meta.name}-test.beton", work / f"run-{variant}-{meta.name}",
                                     work / f"work-{variant}-{meta.name}", device=str(device), threads=args.workers)
        try:
            reset_peak(device)
            history = run(timed)
            seconds = float(history["seconds"].iloc[-1])
            rate = float(history["images_per_second"].iloc[-1])
            row = {"precision": variant, "images_per_s": rate, "train_flops": train_flops(spec, 3, 10, 32, rate),
                   "ms_per_step": 1000 * seconds / steps, "peak_gib": peak_gib(device),
                   "test_acc": float(history["test_acc"].iloc[-1]),
                   "train_acc_per_epoch": [float(v) for v in history["train_acc"]]}
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as prof:
                if device.type == "cuda":
                    _, warned = syncs_in_loop(lambda: run(profiled))
                    row["sync_warnings_per_step"] = warned / (epochs * profiled_steps)  # every epoch
                else:
                    run(profiled)
        finally:
            BatchTransform.draw_epoch = original
        row.update(loop_profile(prof, profiled_steps))
        row["gpu_busy"] = row["kernel_ms_per_step"] / row["ms_per_step"] if device.type == "cuda" else float("nan")
        rows.append(row)
        print(f"  {variant}: {row['images_per_s']:9.0f} img/s  {row['ms_per_step']:7.2f} ms/step  "
              f"GPU busy {row['gpu_busy']:.2f}  syncs/step {row['syncs_per_step']}  "
              f"sync warnings/step {row.get('sync_warnings_per_step', float('nan')):.2f}  "
              f"peak {row['peak_gib']:.2f} GiB", flush=True)
    return rows


# --- 3. ImageNet size: the GPU's step rate against the JPEG loader's ---------------------------

IMAGENET_META = dict(num_classes=1000, shape=(224, 224, 3), n_train=0, n_test=0, val_fraction=0.0, split_seed=0,
                     hflip=True, pixel_range="standardize", mean=IMAGENET_MEAN, std=IMAGENET_STD, encoding="jpeg")


class Photos:
    """Photo-like images of 350–500 × 300–400 pixels, generated from their index (for FFCV's writer)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        h, w = int(rng.integers(300, 401)), int(rng.integers(350, 501))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = rng.uniform(20, 200, size=3) * np.stack([yy, xx, (yy + xx) / 2], -1) + 30
        image = np.clip(base + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
        return image, i % 1000


def step_rate_224(args, device: torch.device, name: str) -> dict:
    """Images/s of VGG19's training step at 224² on batches already on the device."""
    meta = DatasetMeta(name="imagenet-shaped", **IMAGENET_META)
    spec = TrainSpec(model=ModelSpec("vgg19", width=args.width, head="torchvision", dropout=0.5),
                     batch_size=args.batch_size, precision=name, epochs=1)
    set_precision(name)
    reset_peak(device)
    model = init_model(spec, meta, 0).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    transform = BatchTransform(meta, device, reuse_output=True)
    x = torch.randint(0, 256, (args.batch_size, 224, 224, 3), dtype=torch.uint8, device=device)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    sizes = [args.batch_size] * args.steps
    draws = transform.draw_epoch(sizes, torch.Generator().manual_seed(0), device)
    start = time.perf_counter()
    train_epoch(model, optimizer, [(x, y)] * 3, transform, sizes[:1] * 3, draws[:1] * 3, name)  # cuDNN's choices
    sync(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    train_epoch(model, optimizer, [(x, y)] * args.steps, transform, sizes, draws, name)
    sync(device)
    rate = args.steps * args.batch_size / (time.perf_counter() - start)
    return {"precision": name, "images_per_s": rate, "train_flops": train_flops(spec, 3, 1000, 224, rate),
            "first_3_steps_s": first, "peak_gib": peak_gib(device)}


def jpeg_rate(args, device: torch.device, work: Path, threads: int) -> float:
    """Images/s of the FFCV JPEG training pipeline (random resized crop 224, flips and scaling), to the device."""
    path = work / "photos.beton"
    if not path.exists():
        from ffcv.fields import RGBImageField

        write_samples(path, Photos(args.jpegs), RGBImageField(write_mode="proportion", max_resolution=500,
                                                              jpeg_quality=90, compress_probability=0.5),
                      workers=os.cpu_count())
    meta = DatasetMeta(name="photos", **{**IMAGENET_META, "n_train": args.jpegs})
    torch.set_num_threads(threads)
    loader = make_loader(path, args.batch_size, meta=meta, train=True, workers=threads, device=device)
    transform = BatchTransform(meta, device, reuse_output=True)
    generator = torch.Generator().manual_seed(0)
    rates = []
    for epoch in range(2 if args.small else 3):  # the first also compiles numba's own kernels
        start, seen = None, 0
        for x, _ in one_ahead(loader):
            transform(x, generator)
            if start is None:  # timed from the first batch: the seeded random crop recompiles FFCV's pipeline
                sync(device)  # each epoch (~1.3 s on a CPU core), which a short epoch here would count as loading
                start = time.perf_counter()
            else:
                seen += len(x)
        sync(device)
        rates.append(seen / (time.perf_counter() - start))
    return float(np.mean(rates[1:]))


# --- 4. the re-initialization sweep at 224² ------------------------------------------------------

def reinit_224(args, device: torch.device) -> dict:
    meta = DatasetMeta(name="imagenet-shaped", **IMAGENET_META)
    spec = TrainSpec(model=ModelSpec("vgg19", width=args.width, head="torchvision"), epochs=1)
    set_precision("fp32")
    model = init_model(spec, meta, 0).to(device, memory_format=torch.channels_last)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    sources = {"rand": init_model(spec, meta, 1).state_dict(), "0": init_model(spec, meta, 2).state_dict(),
               str(1): final}
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.reinit_images, 224, 224, 3), dtype=torch.uint8, generator=gen).to(device)
    labels = torch.randint(0, 1000, (args.reinit_images,), generator=gen).to(device)
    reset_peak(device)
    budget = free_memory(device)
    seconds = []
    for _ in range(2):  # the first includes cuDNN's algorithm search
        sync(device)
        start = time.perf_counter()
        table = reinit_sweep(model, final, sources, images, labels, transform=BatchTransform(meta, device))
        sync(device)
        seconds.append(time.perf_counter() - start)
    first, seconds = seconds
    # what the planner gives a whole ImageNet validation set (50,000 images) on this device
    whole = sweep_plan(model, BatchTransform(meta, device)(images[:1]), 50_000, budget)[:2]
    return {"images": args.reinit_images, "sources": len(sources), "chunk": table.attrs["chunk"],
            "batch": table.attrs["batch"], "seconds": seconds, "first_seconds": first, "peak_gib": peak_gib(device),
            "budget_gib": budget / 2**30, "imagenet_val_chunk_batch": whole,
            "layer_source_pairs_per_s": len(table) * args.reinit_images / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=20000, help="CIFAR-shaped training images")
    parser.add_argument("--width", type=float, default=1.0, help="VGG19 width multiplier")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps at 224²")
    parser.add_argument("--jpegs", type=int, default=4096, help="images of the JPEG file")
    parser.add_argument("--reinit-images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=8, help="loader threads (the CPUs a GPU job gets)")
    parser.add_argument("--small", action="store_true", help="a smoke run: tiny sizes everywhere, one epoch "
                        "per CIFAR loop, the JPEG loader at --workers threads only")
    parser.add_argument("--out", help="write every figure to this JSON file")
    parser.add_argument("--sections", help="comma-separated sections to run, in this order (default: all)")
    args = parser.parse_args()
    if args.small:
        args.images, args.width, args.batch_size, args.steps, args.jpegs, args.reinit_images, args.workers = \
            128, 0.0625, 16, 2, 32, 8, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible; run on a GPU machine or pass --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    use_device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {os.cpu_count()} CPUs", flush=True)
    result = {"device": name, "torch": torch.__version__, "cpus": os.cpu_count(), "args": vars(args)}
    work = Path(tempfile.mkdtemp(prefix="convbias-gpu-check-"))  # converted sets and runs: ~100 MB, removed at the end
    try:
        sections = [("precision", lambda: precision_errors(device)),
                    ("cpu_vs_device_step", lambda: cpu_vs_device_step(
                        TrainSpec(model=ModelSpec("vgg11", width=0.25, dropout=0.0), epochs=1),
                        DatasetMeta("m", 10, (32, 32, 3), 100, 10, 0.1, 0, True, "standardize", (120.0,) * 3, (60.0,) * 3),
                        device)),
                    ("augment_on_device", lambda: augment_on_device(device)),
                    ("cifar_loop", lambda: cifar_loop(args, device, work)),
                    ("step_224", lambda: [step_rate_224(args, device, p) for p in ("tf32", "bf16", "fp32")]),
                    ("jpeg_loader", lambda: {f"{t} threads": jpeg_rate(args, device, work, t)
                                             for t in sorted({args.workers} if args.small else
                                                             {args.workers, os.cpu_count()})}),
                    ("reinit_224", lambda: reinit_224(args, device))]
        if args.sections:
            known = dict(sections)
            unknown = [k for k in args.sections.split(",") if k not in known]
            if unknown:
                raise SystemExit(f"error: unknown section(s) {', '.join(unknown)}; choose from {', '.join(known)}")
            sections = [(k, known[k]) for k in args.sections.split(",")]
        for key, section in sections:  # one failing section does not hide the others
            print(f"== {key}", flush=True)
            start = time.perf_counter()
            try:
                result[key] = section()
            except Exception as err:  # noqa: BLE001 - reported, and the run goes on
                traceback.print_exc()
                result[key] = {"error": f"{type(err).__name__}: {err}"}
            print(f"   {key}: {json.dumps(result[key], default=float)[:600]}  ({time.perf_counter() - start:.0f} s)",
                  flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary(result, device)


def summary(r: dict, device: torch.device) -> None:
    print(f"\n=== GPU check on {r['device']} (torch {r['torch']}, {r['cpus']} CPUs)")
    p = r.get("precision", {})
    if "fp32" in p:
        print(f"precision  fp32: conv {p['fp32']['conv']:.1e} matmul {p['fp32']['matmul']:.1e} | "
              f"tf32: conv {p['tf32']['conv']:.1e} matmul {p['tf32']['matmul']:.1e}  (rel. error vs float64)")
    step = r.get("cpu_vs_device_step")
    if isinstance(step, (list, tuple)):
        # IEEE float32 on both sides: the loss agrees to ~1e-7 and the update to ~1e-5 of its size
        # (different summation orders); TF32 anywhere would give ~1e-3
        relative = step[1] / step[3] if len(step) > 3 and step[3] else float("nan")
        ok = step[2] == 0 and step[0] < 1e-4 and relative < 1e-3
        print(f"CPU vs {device.type} SGD step (fp32): |dloss| {step[0]:.1e}, max |dw| {step[1]:.1e} "
              f"({relative:.1e} of the largest update; worst tensor {step[5] if len(step) > 5 else '?'}: "
              f"{step[4] if len(step) > 4 else float('nan'):.1e} of its own), same init {step[2] == 0} -> {'PASS' if ok else 'FAIL'}")
    aug = r.get("augment_on_device", {})
    if "max_abs_diff" in aug:
        ok = aug["max_abs_diff"] == 0 and aug["shifts_flips_equal"]
        print(f"augmentation on {device.type} vs host: max |diff| {aug['max_abs_diff']:.1e} -> {'PASS' if ok else 'FAIL'}")
    for row in r.get("cifar_loop", []) if isinstance(r.get("cifar_loop"), list) else []:
        print(f"VGG19 32x32 train_run {row['precision']:>4}: {row['images_per_s']:8.0f} img/s "
              f"({row['train_flops'] / 1e12:.1f} TFLOP/s), GPU busy "
              f"{row['gpu_busy']:.2f}, syncs/step {row['syncs_per_step']}, peak {row['peak_gib']:.1f} GiB")
    jpeg = r.get("jpeg_loader", {})
    for row in r.get("step_224", []) if isinstance(r.get("step_224"), list) else []:
        fed = ", ".join(f"loader/GPU {v / row['images_per_s']:.2f} ({k})" for k, v in jpeg.items()
                        if isinstance(v, float))
        print(f"VGG19 224x224 step {row['precision']:>4}: {row['images_per_s']:7.0f} img/s "
              f"({row['train_flops'] / 1e12:.1f} TFLOP/s), first 3 steps {row['first_3_steps_s']:.0f} s, peak "
              f"{row['peak_gib']:.1f} GiB; {fed}")
    for k, v in jpeg.items():
        print(f"FFCV JPEG pipeline, {k}: {v:.0f} img/s" if isinstance(v, float) else f"FFCV JPEG pipeline: {v}")
    ri = r.get("reinit_224", {})
    if "chunk" in ri:
        print(f"reinit sweep 224x224: {ri['images']} images x {ri['sources']} sources in {ri['seconds']:.1f} s (first {ri['first_seconds']:.1f} s), chunk "
              f"{ri['chunk']} batch {ri['batch']}, peak {ri['peak_gib']:.1f} GiB of a {ri['budget_gib']:.1f} GiB budget; "
              f"ImageNet val: chunk/batch {ri['imagenet_val_chunk_batch']}")
    failed = [k for k, v in r.items() if isinstance(v, dict) and "error" in v]
    print("sections failed: " + (", ".join(failed) if failed else "none"))


if __name__ == "__main__":
    main()

"""The training loop: SGD with the paper's schedules, a checkpoint every epoch, resume after a kill.

Setup, resume, epochs, publish: the loop commits every epoch into the run's work folder as it
goes and publishes the run when its last epoch is committed (:class:`convbias.runs.Run`, which
owns everything a run writes).  Started again with the same spec, a run continues after its
resume point (the last epoch whose full state was saved: every epoch, or every ``resume_every``
seconds) and ends bit-identical; with another spec it starts over.

Several GPUs: :func:`launch` starts one process per GPU with ``torchrun``; each trains a
``DistributedDataParallel`` replica on its part of every global batch (the batch size stays the
configured one, the loss is scaled so that the averaged gradient is the single-process one),
evaluation is split over the processes and summed, and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .specs import TrainSpec
from .data.dataset import DatasetMeta
from .data.loaders import batch_indices, global_batches, make_loader, one_ahead, shard_sizes
from .data.transform import BatchTransform
from .devices import autocast, resolve_device, set_precision, sum_over_processes, use_device
from .devices import world as world_of_process
from .harness import stops_with_one_sentence
from .learning import stall_message
from .models import conv_layers, init_model
from .resources import model_size, training_disk_bytes
from .runs import HISTORY_COLUMNS, DataParallelFailed, Run, provenance, run_lock, seconds_left


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch of one run (shifts, flips; dropout of process 0)."""
    return seed * 100_003 + epoch


def dropout_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of the dropout masks of process ``rank``: each process of a data-parallel run
    draws its own masks (the same seed would repeat one mask pattern in every share)."""
    return epoch_seed(seed, epoch) + (rank << 32)


def evaluate(model: torch.nn.Module, loader, transform: BatchTransform, precision: str) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (over every process's loader)."""
    model.eval()
    loss = correct = count = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for x, y in one_ahead(loader):
            with autocast(device, precision):
                out = model(transform(x)).float()
            y = y.long()
            loss = loss + F.cross_entropy(out, y, reduction="sum")
            correct = correct + (out.argmax(1) == y).sum()
            count += len(y)
    loss, correct, count = sum_over_processes(loss, correct, count, device=device)
    return loss / count, correct / count


def train_epoch(forward, optimizer, loader, transform: BatchTransform, steps: list[int],
                draws: list | None, precision: str, rank: int = 0, world: int = 1, indices: list | None = None):
    """One pass over ``loader``; returns this process's (loss sum, correct answers, images).

    ``steps`` are the global batch sizes, ``draws`` their augmentation (None: no augmentation),
    ``indices`` the training-file indices of each of this process's batches (for per-image pixel
    shuffles; None: not needed).
    Nothing in the loop waits for the device: sums stay device tensors until the epoch ends.
    """
    forward.train()
    device = next(forward.parameters()).device
    loss_sum, correct, seen = 0.0, 0, 0
    # per-batch bars on a terminal only (disable=None: off when stderr is a file, e.g. a job's log)
    batches = tqdm(one_ahead(loader), desc="train", total=len(steps), unit="batch", leave=False,
                   disable=True if rank > 0 else None)
    with torch.profiler.record_function("convbias.train_epoch"):
        for step, (x, y) in enumerate(batches):
            shares = shard_sizes(steps[step], world)  # x is this process's share of global batch ``step``
            x = transform(x, draws=None if draws is None else draws[step], part=(sum(shares[:rank]), steps[step]),
                          indices=None if indices is None else indices[step])
            y = y.long()
            with autocast(device, precision):
                out = forward(x).float()
            if world == 1:  # pragma: no mutate (the else branch gives the same loss in one process)
                loss = F.cross_entropy(out, y)
                batch_loss = loss.detach() * len(y)
            else:  # DDP averages the W gradients: scale each share's sum to get the global mean
                batch_loss = F.cross_entropy(out, y, reduction="sum")  # pragma: no mutate (DDP only)
                loss = batch_loss * (world / steps[step])  # pragma: no mutate (DDP only)
                batch_loss = batch_loss.detach()  # pragma: no mutate (DDP only)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum = loss_sum + batch_loss
            correct = correct + (out.detach().argmax(1) == y).sum()
            seen += len(y)
    return loss_sum, correct, seen


def compile_warmup(forward, optimizer, transform: BatchTransform, meta: DatasetMeta, sizes: list[int],
                   precision: str) -> float:
    """Compile the training graphs of ``forward`` for batches of ``sizes`` before any epoch is
    timed; weights, gradients and random state are left as they were.  Returns the seconds.

    In a data-parallel run every process must pass as many sizes (each backward all-reduces)."""
    device = next(forward.parameters()).device
    h, w, c = meta.shape
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # pragma: no mutate (GPU only)
        forward.train()
        for n in sizes:
            x = transform(torch.zeros((n, h, w, c), dtype=torch.uint8, device=device))
            with autocast(device, precision):
                out = forward(x).float()
            out.sum().backward()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":  # pragma: no mutate (GPU only)
        torch.cuda.synchronize(device)  # pragma: no mutate
    return time.perf_counter() - start


def train_run(spec: TrainSpec, seed: int, meta: DatasetMeta, train_file: str | Path, test_file: str | Path,
              out_dir: str | Path, work_dir: str | Path, device: str = "auto", threads: int = 1,  # pragma: no mutate
              stop_after: int | None = None, order: str = "random", os_cache: bool = True,
              stall_epochs: int = 0, resume_every: float = 0) -> pd.DataFrame:
    """Train one seed of ``spec``; returns the history.  ``stop_after`` ends early (for tests).

    ``order``: the training loader's sample order (``random`` or ``quasi_random``, part of the
    run's identity); ``os_cache``: whether the loaders read through the OS page cache (speed only);
    ``stall_epochs``: after this many epochs in a row at ln C the epoch line says the run is not
    learning (0: never; :func:`convbias.learning.stall_message`) — it trains on; ``resume_every``:
    seconds between the epochs whose full state (weights and momentum) is written, the run's
    resume points (0: every epoch; the others write their snapshot only — see
    :class:`convbias.runs.Run`).  The initialization, the final epoch and ``stop_after`` always are.

    One process at a time trains a run: this one holds the run's lock (:meth:`convbias.runs.Run.open`)
    — a second waits and then continues from what the first left, or finds the run published and
    returns its history.  Run under ``torchrun`` (see :func:`launch`, which holds the lock) it is
    one process of a data-parallel run.
    """
    rank, world = world_of_process()
    run = Run(out_dir, work_dir, spec.run_fingerprint(seed, meta, order), spec.epochs,
              snapshots=spec.snapshots, resume_every=resume_every, stop_after=stop_after, rank=rank, world=world)
    with run.open(disk_needed=lambda: disk_needed(spec, meta)):
        return _train(spec, seed, meta, train_file, test_file, run, device, threads, order, os_cache, stall_epochs)


def disk_needed(spec: TrainSpec, meta: DatasetMeta) -> int:
    """Bytes a run of ``spec`` on ``meta`` needs on disk while it trains, as ``convbias plan`` counts them."""
    height, _, channels = meta.shape
    return training_disk_bytes(spec, model_size(spec, channels, meta.num_classes, height))


def _train(spec: TrainSpec, seed: int, meta: DatasetMeta, train_file: str | Path, test_file: str | Path, run: Run,
           device: str, threads: int, order: str, os_cache: bool, stall_epochs: int) -> pd.DataFrame:
    dev = _set_up(device, spec.precision, threads, run.rank, run.world)
    published = run.published()
    if published is not None:
        return published
    model, optimizer, forward = _model(spec, meta, seed, dev, run.world)
    # each batch is used before the next, so the transform may write every batch into one buffer
    transform = BatchTransform(meta, dev, reuse_output=True)  # pragma: no mutate (speed only)
    loaders = _loaders(spec, meta, seed, train_file, test_file, dev, threads, order, os_cache, run.world)
    steps = global_batches(len(meta.train_indices()), spec.batch_size, run.world)  # the global batch sizes
    evaluated = model if run.world > 1 else forward  # pragma: no mutate (shares differ in size: no DDP collectives)

    def history_row(epoch, lr, train_loss, train_acc, seconds, images):
        val_loss, val_acc = evaluate(evaluated, loaders[1], transform, spec.precision)
        test_loss, test_acc = evaluate(evaluated, loaders[2], transform, spec.precision)
        return {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                "seconds": seconds, "images_per_second": images / seconds if seconds else float("nan")}

    last, history = run.resume(model, optimizer, {"seed": seed, "conv_layers": [name for name, _ in conv_layers(model)]})
    if last is None:
        last, history = 0, [history_row(0, float("nan"), float("nan"), float("nan"), 0.0, 0)]
        run.commit(0, history)
    stopped = diverged(history)  # committed, not yet published, when the job was killed
    epochs = range(last + 1, spec.epochs + 1) if stopped is None else range(0)
    if spec.compile and len(epochs):  # so that no epoch's time includes compiling
        sizes = [shard_sizes(m, run.world)[run.rank] for m in sorted(set(steps))]  # as many in every process
        run.say(f"torch.compile: {compile_warmup(forward, optimizer, transform, meta, sizes, spec.precision):.1f} s")
    label = f"{run.out.parent.name} seed {seed}"  # results/runs/<experiment>/seed<s>
    for epoch in tqdm(epochs, desc=label, unit="epoch", initial=last, total=spec.epochs, disable=run.rank > 0 or None):
        lr = spec.schedule.lr(spec.lr, epoch)
        loss, accuracy, seconds, seen = _epoch(spec, seed, epoch, lr, forward, optimizer, loaders[0], transform, steps,
                                               run.rank, run.world)
        history.append(history_row(epoch, lr, loss, accuracy, seconds, seen))
        stopped = diverged(history)
        run.commit(epoch, history, last=stopped is not None)
        run.say(epoch_line(label, history, spec.epochs, stall_message(history, meta.num_classes, stall_epochs)))
        if stopped is not None:
            break
        if run.stop_after is not None and epoch >= run.stop_after:  # for tests: committed, not published
            run.wait()
            return pd.DataFrame(history, columns=HISTORY_COLUMNS)
    if stopped is not None:
        run.say(f"{label} stopped at epoch {history[-1]['epoch']} of {spec.epochs}: {stopped}; it is published with "
                f"its epochs so far, claim C0 counts it as a run that did not learn, and the statistics and sweeps "
                f"read its epochs with finite weights only")
    run.publish(history, lambda: about(spec, seed, meta, order, dev, run.world, history, stopped))
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


def about(spec: TrainSpec, seed: int, meta: DatasetMeta, order: str, dev: torch.device, world: int,
          history: list[dict], stopped: str | None) -> dict:
    """What a finished run's manifest says of it: its spec, seed and data, where and how it was
    computed (:func:`convbias.runs.provenance`) and, for a run that diverged, where and why it stopped."""
    return {"seed": seed, "spec": spec.to_dict(),
            "dataset": {"name": meta.name, "fingerprint": meta.fingerprint, "order": order},
            "computed": provenance(dev, spec.precision, world, [row["seconds"] for row in history]),
            **({"stopped": {"epoch": history[-1]["epoch"], "why": stopped}} if stopped is not None else {})}


def _set_up(device: str, precision: str, threads: int, rank: int, world: int) -> torch.device:
    """The device this process trains on, made current, with ``precision`` and ``threads`` set."""
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:  # pragma: no mutate (GPU only)
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))  # pragma: no mutate
    use_device(dev)
    set_precision(precision)
    torch.set_num_threads(max(1, threads))  # pragma: no mutate (speed only)
    return dev


def _model(spec: TrainSpec, meta: DatasetMeta, seed: int, dev: torch.device, world: int):
    """(model, its SGD, what training calls): the initialized model on ``dev`` — channels-last is
    faster on GPUs and, measured here, on CPUs too (~35% for small convs) —, in a DDP replica when
    ``world`` > 1, compiled when the spec says so (reduce-overhead: CUDA graphs of each batch shape,
    for launch-bound steps); all three share the model's parameters."""
    model = init_model(spec, meta, seed).to(dev, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                weight_decay=spec.weight_decay)
    replica = model
    if world > 1:
        replica = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)  # pragma: no mutate
    mode = {"mode": "reduce-overhead"} if spec.compile == "reduce-overhead" else {}
    return model, optimizer, torch.compile(replica, **mode) if spec.compile else replica


def _loaders(spec: TrainSpec, meta: DatasetMeta, seed: int, train_file, test_file, dev: torch.device, threads: int,
             order: str, os_cache: bool, world: int) -> tuple:
    """The (training, validation, test) loaders of a run: this process's share of each."""
    shared = {"meta": meta, "workers": max(1, threads), "device": dev, "distributed": world > 1, "os_cache": os_cache}
    return (make_loader(train_file, spec.batch_size, indices=meta.train_indices(), train=True, seed=seed, order=order,
                        **shared),
            make_loader(train_file, 512, indices=meta.val_indices(), **shared),  # pragma: no mutate (speed only)
            make_loader(test_file, 512, **shared))  # pragma: no mutate (speed only)


def _epoch(spec: TrainSpec, seed: int, epoch: int, lr: float, forward, optimizer, loader, transform: BatchTransform,
           steps: list[int], rank: int, world: int) -> tuple[float, float, float, int]:
    """Train epoch ``epoch`` at learning rate ``lr``, its randomness drawn from (seed, epoch) alone;
    returns the train loss and accuracy over every process, the seconds it took and the images seen."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(dropout_seed(seed, epoch, rank))
    dev = next(forward.parameters()).device
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    draws = transform.draw_epoch(steps, generator, dev) if spec.augment else None
    loader.next_epoch = epoch - 1
    indices = batch_indices(loader, dev) if transform.permutes else None
    start = time.perf_counter()
    loss_sum, correct, seen = train_epoch(forward, optimizer, loader, transform, steps, draws, spec.precision, rank,
                                          world, indices)
    if dev.type == "cuda":  # pragma: no mutate (GPU only)
        torch.cuda.synchronize(dev)  # pragma: no mutate (the epoch ends when the device is done)
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = sum_over_processes(loss_sum, correct, seen, device=dev)
    return loss_sum / seen, correct / seen, seconds, seen


def diverged(history: list[dict]) -> str | None:
    """Why a run whose ``history`` ends so stops now — its last epoch's train loss is not a number
    or infinite (a diverged run: SGD on NaN weights keeps them NaN, so no later epoch can learn) —, or None."""
    row = history[-1]
    loss = float(row["train_loss"])
    if row["epoch"] > 0 and not math.isfinite(loss):
        return f"its train loss is {loss} (the run diverged; no step of SGD brings NaN weights back)"
    return None


def epoch_line(label: str, history: list[dict], epochs: int, warning: str | None = None) -> str:
    """One line per finished epoch for the job's log: what a person watching a run wants to see,
    ending with ``warning`` (e.g. that the run is not learning) when there is one."""
    row = history[-1]
    hours, minutes = divmod(round(seconds_left(history, epochs) / 60), 60)
    return (f"{label} epoch {row['epoch']}/{epochs}: lr {row['lr']:.3g}, train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f}, val acc {row['val_acc']:.4f}, {row['images_per_second']:.0f} img/s, "
            f"{row['seconds']:.1f} s; {hours} h {minutes:02d} min left" + (f"; {warning}" if warning else ""))


def launch(job: dict, processes: int) -> None:  # pragma: no mutate block (runs in child processes)
    """Run the training ``job`` (:func:`train_run`'s arguments, spec as a dict) in ``processes``
    data-parallel processes started by ``torchrun`` on this node; blocks until they finish."""
    work = Path(job["work_dir"])
    with run_lock(work):  # for all the processes: one run, one job
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=work.parent, prefix=f".{work.name}-job-",
                                         delete=False) as f:
            error = Path(f.name + ".error")  # where a failing process leaves its one sentence
            json.dump({**job, "error_file": str(error)}, f)
        try:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "convbias.train", f.name]
            result = subprocess.run(cmd)
            said = error.read_text() if error.exists() else ""
        finally:
            Path(f.name).unlink(missing_ok=True)
            error.unlink(missing_ok=True)
    if result.returncode:
        raise DataParallelFailed(f"data-parallel training failed: {said}" if said else
                                 f"data-parallel training failed (exit status {result.returncode}); "
                                 f"the log above names the failing process")


def _main(argv: list[str]) -> None:  # pragma: no mutate block (runs in child processes)
    """``python -m convbias.train JOB.json``: one process of a :func:`launch`-ed run."""
    job = json.loads(Path(argv[0]).read_text())
    device = resolve_device(job["device"])
    world = int(os.environ.get("WORLD_SIZE", 1))
    if device.type == "cuda" and torch.cuda.device_count() < world:
        sys.exit(f"error: {world} training processes but {torch.cuda.device_count()} visible GPUs; "
                 f"give the job {world} GPUs or lower the experiment's gpus")
    if device.type == "cuda":  # one GPU per process, bound before NCCL starts
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        use_device(device)
        torch.distributed.init_process_group("nccl", device_id=device)
    else:
        torch.distributed.init_process_group("gloo")
    try:
        optional = {k: job[k] for k in ("threads", "stop_after", "stall_epochs", "resume_every") if k in job}  # else train_run's defaults
        with stops_with_one_sentence(also_to=job.get("error_file")):  # a full disk: one sentence, also for launch
            train_run(TrainSpec.from_dict(job["spec"]), job["seed"], DatasetMeta.load(job["meta"]), job["train_file"],
                      job["test_file"], job["out_dir"], job["work_dir"], device=job["device"],
                      order=job["order"], os_cache=job["os_cache"], **optional)
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _main(sys.argv[1:])

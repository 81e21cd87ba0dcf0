"""The training loop: SGD with the paper's schedules, a checkpoint every epoch, resume after a kill.

A run writes into a work folder (:class:`~convbias.commits.WorkFolder`) as it goes — the weights of
every epoch (epoch 0 is the initialization), the optimizer's momentum of its resume point (the
last epoch whose full state was saved: every epoch, or every ``resume_every`` seconds), the
history and, written last, the progress file, which commits an epoch (written by a thread while
the next epoch trains: :class:`~convbias.commits.BackgroundCommits`).  Started again with the
same spec, a run continues after its resume point; with another spec it starts over.  When the
last epoch is committed the files are hard-linked into the output folder; the work folder stays
until the workflow has seen the job end, so Snakemake deleting a failed job's outputs never loses
finished epochs (:mod:`convbias.commits`).

Several GPUs: :func:`launch` starts one process per GPU with ``torchrun``; each trains a
``DistributedDataParallel`` replica on its part of every global batch (the batch size stays the
configured one, the loss is scaled so that the averaged gradient is the single-process one),
evaluation is split over the processes and summed, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from time import monotonic

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
from .learning import stall_message
from .models import conv_layers, init_model
from .commits import BackgroundCommits, WorkFolder
from .runs import (HISTORY_COLUMNS, DataParallelFailed, DiskFull, RunFolder, provenance, replaced_because, run_lock,
                   seconds_left)


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
    :mod:`convbias.commits`).  The initialization, the final epoch and ``stop_after`` always are.

    One process at a time trains a run: this one holds the run's lock (:func:`convbias.runs.run_lock`)
    — a second waits and then continues from what the first left, or finds the run published and
    returns its history.  Run under ``torchrun`` (see :func:`launch`, which holds the lock) it is
    one process of a data-parallel run.
    """
    args = (spec, seed, meta, train_file, test_file, out_dir, work_dir, device, threads, stop_after, order, os_cache,
            stall_epochs, resume_every)
    with contextlib.ExitStack() as stack:
        if world_of_process()[1] == 1:
            stack.enter_context(run_lock(Path(work_dir)))
        commits = stack.enter_context(BackgroundCommits())  # finished before the lock is let go
        try:
            return _train(*args, commits)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise DiskFull(err.filename, disk_needed(spec, meta), [Path(work_dir), Path(out_dir)]) from None


def disk_needed(spec: TrainSpec, meta: DatasetMeta) -> int:
    """Bytes a run of ``spec`` on ``meta`` needs on disk while it trains, as ``convbias plan`` counts them."""
    from .resources import model_size, training_disk_bytes

    height, _, channels = meta.shape
    return training_disk_bytes(spec, model_size(spec, channels, meta.num_classes, height))


def _train(spec: TrainSpec, seed: int, meta: DatasetMeta, train_file: str | Path, test_file: str | Path,
           out_dir: str | Path, work_dir: str | Path, device: str, threads: int,  # pragma: no mutate
           stop_after: int | None, order: str, os_cache: bool, stall_epochs: int, resume_every: float,
           commits: BackgroundCommits) -> pd.DataFrame:
    rank, world = world_of_process()
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:  # pragma: no mutate (GPU only)
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))  # pragma: no mutate
    use_device(dev)
    set_precision(spec.precision)
    torch.set_num_threads(max(1, threads))  # pragma: no mutate (speed only)
    work = WorkFolder(work_dir, spec.fingerprint(seed=seed, data=meta.__dict__, order=order))
    # published by another process while this one waited for the lock, or before this job started
    # (Snakemake reruns a job it saw killed, and with --forcerun; the rule's output is update()d)
    replaced = replaced_because(Path(out_dir), work.fingerprint)
    if replaced is None:
        if rank == 0:
            tqdm.write(f"{out_dir} is this run, published and intact (manifest and checksums verified): nothing "
                       f"left to train (to train it again, delete that folder)", file=sys.stderr)
            if work.path.exists():
                shutil.rmtree(work.path)  # left by a publish killed after its manifest
        return RunFolder(out_dir).history()
    if rank == 0 and Path(out_dir).exists():
        tqdm.write(f"{out_dir} will be replaced when this run is published: {replaced}", file=sys.stderr)
    # channels-last is faster on GPUs and, measured here, on CPUs too (~35% for small convs)
    model = init_model(spec, meta, seed).to(dev, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                weight_decay=spec.weight_decay)
    replica = model
    if world > 1:
        replica = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)  # pragma: no mutate
    # shares the parameters of ``model``; reduce-overhead: CUDA graphs of each batch shape (launch-bound steps)
    mode = {"mode": "reduce-overhead"} if spec.compile == "reduce-overhead" else {}
    forward = torch.compile(replica, **mode) if spec.compile else replica
    # each batch is used before the next, so the transform may write every batch into one buffer
    transform = BatchTransform(meta, dev, reuse_output=True)  # pragma: no mutate (speed only)
    shared = {"meta": meta, "workers": max(1, threads), "device": dev, "distributed": world > 1, "os_cache": os_cache}
    train_indices = meta.train_indices()
    train_loader = make_loader(train_file, spec.batch_size, indices=train_indices, train=True, seed=seed,
                               order=order, **shared)
    val_loader = make_loader(train_file, 512, indices=meta.val_indices(), **shared)  # pragma: no mutate (speed only)
    test_loader = make_loader(test_file, 512, **shared)  # pragma: no mutate (speed only)
    steps = global_batches(len(train_indices), spec.batch_size, world)  # the global batch sizes
    ckpt_meta = {"seed": seed, "conv_layers": [name for name, _ in conv_layers(model)]}

    # shares differ in size: no DDP collectives in evaluation
    evaluated = model if world > 1 else forward  # pragma: no mutate (DDP only)

    def history_row(epoch, lr, train_loss, train_acc, seconds, images):
        val_loss, val_acc = evaluate(evaluated, val_loader, transform, spec.precision)
        test_loss, test_acc = evaluate(evaluated, test_loader, transform, spec.precision)
        return {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                "seconds": seconds, "images_per_second": images / seconds if seconds else float("nan")}

    resumable_at = [monotonic()]  # when the last resume point was committed

    def commit(epoch, last=False):
        """Commit ``epoch`` (while the next epoch trains: BackgroundCommits): a resume point at the
        start and the end (``last``: the run stops here), when stopping, and once ``resume_every``
        seconds have passed."""
        if rank == 0:
            now = monotonic()
            last = last or epoch == spec.epochs
            resume = (last or epoch == 0 or (stop_after is not None and epoch >= stop_after)
                      or resume_every <= 0 or now - resumable_at[0] >= resume_every)
            if resume:
                resumable_at[0] = now
            commits.submit(work, epoch, model, optimizer, history, ckpt_meta, spec.snapshots, resume=resume,
                           momentum=not last)
        if world > 1:
            torch.distributed.barrier()

    say = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731
    if rank == 0:
        work.last_epoch(say=say)  # clears the folder of another spec, or a damaged one, before anyone reads it
    if world > 1:
        torch.distributed.barrier()
    last = work.last_epoch(clear=False)
    if last is None:
        history = [history_row(0, float("nan"), float("nan"), float("nan"), 0.0, 0)]
        commit(0)
        last = 0
    else:
        history = work.restore(last, model, optimizer)
        if rank == 0:
            again = (f" (epochs {last + 1}–{work.committed} were committed without their full state: they train "
                     f"again)" if work.committed > last else "")
            tqdm.write(f"resuming from epoch {last} saved in {work.path}{again}", file=sys.stderr)

    stopped = diverged(history)  # committed, not yet published, when the job was killed
    epochs = range(last + 1, spec.epochs + 1) if stopped is None else range(0)
    if spec.compile and len(epochs):  # so that no epoch's time includes compiling
        sizes = [shard_sizes(m, world)[rank] for m in sorted(set(steps))]  # as many in every process
        seconds = compile_warmup(forward, optimizer, transform, meta, sizes, spec.precision)
        if rank == 0:
            tqdm.write(f"torch.compile: {seconds:.1f} s", file=sys.stderr)
    label = f"{Path(out_dir).parent.name} seed {seed}"  # results/runs/<experiment>/seed<s>
    for epoch in tqdm(epochs, desc=label, unit="epoch", initial=last, total=spec.epochs,
                      disable=True if rank > 0 else None):
        lr = spec.schedule.lr(spec.lr, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(dropout_seed(seed, epoch, rank))
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        draws = transform.draw_epoch(steps, generator, dev) if spec.augment else None
        train_loader.next_epoch = epoch - 1
        indices = batch_indices(train_loader, dev) if transform.permutes else None
        start = time.perf_counter()
        loss_sum, correct, seen = train_epoch(forward, optimizer, train_loader, transform, steps, draws,
                                              spec.precision, rank, world, indices)
        if dev.type == "cuda":  # pragma: no mutate (GPU only)
            torch.cuda.synchronize(dev)  # pragma: no mutate (the epoch ends when the device is done)
        seconds = time.perf_counter() - start
        loss_sum, correct, seen = sum_over_processes(loss_sum, correct, seen, device=dev)
        history.append(history_row(epoch, lr, loss_sum / seen, correct / seen, seconds, seen))
        stopped = diverged(history)
        commit(epoch, last=stopped is not None)
        if rank == 0:
            say(epoch_line(label, history, spec.epochs, stall_message(history, meta.num_classes, stall_epochs)))
        if stopped is not None:
            break
        if stop_after is not None and epoch >= stop_after:
            commits.wait()
            return pd.DataFrame(history, columns=HISTORY_COLUMNS)
    if rank == 0:
        commits.wait()  # the last epoch committed before anything is published
        about = {"fingerprint": work.fingerprint, "seed": seed, "spec": spec.to_dict(),
                 "dataset": {"name": meta.name, "fingerprint": meta.fingerprint, "order": order},
                 "computed": provenance(dev, spec.precision, world, [row["seconds"] for row in history])}
        if stopped is not None:
            about["stopped"] = {"epoch": history[-1]["epoch"], "why": stopped}
            say(f"{label} stopped at epoch {history[-1]['epoch']} of {spec.epochs}: {stopped}; it is published "
                f"with its epochs so far, claim C0 counts it as a run that did not learn, and the statistics and "
                f"sweeps read its epochs with finite weights only")
        work.publish(Path(out_dir), history[-1]["epoch"], about)
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


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
    import subprocess
    import tempfile

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
    from .jobs import stops_with_one_sentence

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

"""Where a job computes: its GPUs (claimed before CUDA starts), device, threads and float32 precision.

A local Snakemake run starts every job on the same machine: :func:`job_gpus` gives each job its
own GPUs through lock files and ``CUDA_VISIBLE_DEVICES`` (set before anything starts CUDA), and
hides every GPU from jobs that compute on the CPU.  Under Slurm the scheduler already did both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that use it: a job that only claims its GPUs (job_gpus) and
# then finds its table already made (a reinit job after a copy) needs none of it (1.5 s CPU).
PRECISIONS = ("fp32", "tf32", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the current CUDA device when there is one, else the CPU; a bare ``cuda`` gets its index."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # torch.cuda.set_device refuses a device without index
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def use_device(device: torch.device) -> None:
    """Make ``device`` the current one (CUDA: set it, let cuDNN pick the fastest algorithms)."""
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True


def set_precision(precision: str) -> None:
    """The float32 arithmetic of CUDA convolutions and matmuls: ``tf32`` allows TensorFloat-32,
    ``fp32`` and ``bf16`` (whose fp32 parts stay fp32) do not.  No effect on the CPU.

    Uses the flags PyTorch has had for years (torch 2.9's ``fp32_precision`` flags refuse to be
    read through these once set, which breaks code that reads them).
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


@contextlib.contextmanager
def precision(name: str) -> Iterator[None]:
    """:func:`set_precision` for a ``with`` block only."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    set_precision(name)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; to a GPU through pinned memory, so the host does not wait for the device."""
    if device.type == "cuda":  # pragma: no mutate (GPU only)
        return tensor.pin_memory().to(device, non_blocking=True)  # pragma: no mutate
    return tensor.to(device)


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (bf16 autocast; a no-op for fp32 and tf32)."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def world() -> tuple[int, int]:  # pragma: no mutate block (data-parallel: runs in torchrun's processes)
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialized."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def sum_over_processes(*values, device) -> list[float]:
    """The sums of scalar tensors or numbers over all processes of a data-parallel run (one
    synchronization); their values in a single process."""
    import torch

    total = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    if world()[1] > 1:
        torch.distributed.all_reduce(total)
    return total.tolist()


def job_threads(threads: int, processes: int = 1) -> int:
    """CPU threads of a job: Slurm's allocation when run under Slurm, else Snakemake's ``threads``.

    The workflow asks Slurm for CPUs per GPU; inside the job Snakemake's own thread count
    (capped by the rule) does not know it, the environment does.
    """
    if os.environ.get("SLURM_JOB_ID"):
        if os.environ.get("SLURM_CPUS_PER_GPU"):
            return int(os.environ["SLURM_CPUS_PER_GPU"]) * max(1, processes)
        if os.environ.get("SLURM_CPUS_PER_TASK"):
            return int(os.environ["SLURM_CPUS_PER_TASK"])
    return max(1, threads)


def job_memory(mem_mb: int | None) -> int:
    """Bytes of memory a job may use: its ``mem_mb`` resource (what Slurm grants it), at most the
    machine's physical memory; the machine's when the job has none."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return physical if not mem_mb else min(int(mem_mb) * 2**20, physical)


def gpu_pool() -> list[str]:
    """This machine's GPUs a job may take, found without starting CUDA: the entries of
    ``CUDA_VISIBLE_DEVICES`` when it is set, else the indices ``nvidia-smi`` lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def lock_dir() -> Path:
    """Where the GPU lock files of this machine live (``CONVBIAS_GPU_LOCKS`` or the temp folder)."""
    return Path(os.environ.get("CONVBIAS_GPU_LOCKS") or Path(tempfile.gettempdir()) / "convbias-gpu-locks")


@contextlib.contextmanager
def claim_gpus(n: int, pool: list[str], folder: Path, poll: float = 2.0, shares: int = 1) -> Iterator[list[str]]:
    """Hold ``n`` GPUs of ``pool`` that no other job holds (one lock file each) while the block runs.

    ``shares`` > 1 (one GPU only): hold one of ``shares`` places on a GPU instead, beside up to
    ``shares`` − 1 other such jobs — on the GPU with the fewest, as far as places go — but never
    beside a job that holds the GPU whole.  (A whole claim locks ``gpu<N>.lock`` exclusively; a
    shared one locks it shared, and one ``gpu<N>.place<j>.lock`` exclusively.)
    Waits while none is free.  A killed job's locks go with its process (``flock``).
    """
    if n > len(pool):
        raise RuntimeError(f"the job needs {n} GPUs but this machine shows {len(pool)} ({','.join(pool) or 'none'}); "
                           f"lower the experiment's gpus or run it where there are more")
    if shares > 1 and n != 1:
        raise ValueError(f"a job of {n} GPUs holds them whole: only one-GPU jobs share a GPU")
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # shared by every user of the machine
        folder.chmod(0o1777)

    def lock(name: str, how: int) -> int | None:
        fd = os.open(folder / name, os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def whole() -> list[tuple[str, int]]:
        held = []
        for gpu in pool:
            fd = lock(f"gpu{gpu}.lock", fcntl.LOCK_EX)
            if fd is not None:
                held.append((gpu, fd))
                if len(held) == n:
                    return held
        for _, fd in held:
            os.close(fd)
        return []

    def shared() -> list[tuple[str, int]]:
        for place in range(shares):  # the first place of every GPU, then the second …: spread out
            for gpu in pool:
                gpu_fd = lock(f"gpu{gpu}.lock", fcntl.LOCK_SH)
                if gpu_fd is None:
                    continue  # held whole
                place_fd = lock(f"gpu{gpu}.place{place}.lock", fcntl.LOCK_EX)
                if place_fd is not None:
                    return [(gpu, gpu_fd), (gpu, place_fd)]
                os.close(gpu_fd)
        return []

    said = False
    while not (held := shared() if shares > 1 else whole()):
        if not said:
            what = f"a place on a GPU (of {shares} each)" if shares > 1 else f"{n} free GPU(s)"
            print(f"waiting for {what} of {','.join(pool)} (the others are held by other jobs; "
                  f"limit concurrent GPU jobs with snakemake --resources gpu={len(pool)})", file=sys.stderr)
            said = True
        time.sleep(poll)
    try:
        yield list(dict.fromkeys(gpu for gpu, _ in held))
    finally:
        for _, fd in held:
            os.close(fd)


@contextlib.contextmanager
def job_gpus(device: str, n: int = 1, shares: int = 1) -> Iterator[list[str]]:
    """The GPUs of a workflow job while it runs; call before anything starts CUDA.

    Under Slurm nothing changes (the scheduler set ``CUDA_VISIBLE_DEVICES``).  A job that computes
    on the CPU sees no GPU at all (so neither it nor its loaders touch one); a GPU job on a local
    machine claims ``n`` free GPUs and sees only those — a one-GPU job, with ``shares`` > 1 (the
    study's ``runs_per_gpu``), one of that many places on a GPU (:func:`claim_gpus`).  An explicit
    ``cuda:N`` is left as it is.
    """
    shares = shares if n == 1 else 1

    def tell(gpus):  # the job's log says what it got (under Slurm: what the scheduler assigned)
        shared = f", one of {shares} jobs a GPU may hold" if shares > 1 and gpus else ""
        print(f"GPUs of this job: {','.join(gpus) or 'none'} (device {device}, {n} asked for{shared})", file=sys.stderr)
        return gpus

    if os.environ.get("SLURM_JOB_ID") or (device.startswith("cuda:")):
        yield tell(gpu_pool())
        return
    saved, pool = os.environ.get("CUDA_VISIBLE_DEVICES"), gpu_pool()
    try:
        if device == "cpu" or n == 0 or (device == "auto" and not pool):  # auto on a machine without GPUs
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
            yield tell([])
        else:
            with claim_gpus(n, pool, lock_dir(), shares=shares) as gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
                yield tell(gpus)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved

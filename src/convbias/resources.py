"""What each job of the study needs — memory, disk, time — computed from the config before anything runs.

A small model, in one place: sizes follow from the published sizes of each dataset source and
from the model's parameters and multiply-accumulates (the model is built on PyTorch's ``meta``
device: shapes only, no memory); times from a compute rate — one measured on this study's own
finished runs where there are any (their ``history.parquet`` records images/s), else the
GPU check's benchmarked rate or, on the CPU, the quickstart's calibrated one; the plan says which.  Rules ``convert``, ``train``, ``filters`` and ``reinit`` ask Slurm
for these (``mem_mb``, ``disk_mb``, ``runtime``); ``convbias plan`` prints them.

Memory constants are measured peaks of this project's jobs on the CPU (``BASE_MB``: Python,
torch, FFCV and numba loaded); every estimate is rounded up by ``MARGIN``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from pathlib import Path

from .specs import DatasetSpec, ExperimentSpec, TrainSpec

MB = 2**20
BASE_MB = 1300  # a job before its own data: a quickstart_vgg11 training job on the CPU peaked at 1,267 MB
MARGIN = 1.25  # every estimate asks for a quarter more than the arithmetic
# (n_train, n_test, height, width, channels, classes) as published
SOURCES = {
    "mnist": (60_000, 10_000, 28, 28, 1, 10),
    "fashion_mnist": (60_000, 10_000, 28, 28, 1, 10),
    "cifar10": (50_000, 10_000, 32, 32, 3, 10),
    "cifar100": (50_000, 10_000, 32, 32, 3, 100),
    "imagenet": (1_281_167, 50_000, 224, 224, 3, 1000),
}
# ImageNet stored as FFCV's recipe stores it (longest side ≤ max_resolution, a fraction as JPEG):
# an average image of 400×350 at 500 px; raw images keep their pixels, JPEGs ~1/8 of them
IMAGENET_AREA_AT_500 = 400 * 350
JPEG_RATIO = 1 / 8
# compute rates when no run of the study has measured one (FLOP/s of training arithmetic)
# One GPU, measured by bench/gpu_check.py on an NVIDIA H200 (torch 2.11, VGG19, batch 128; see
# BENCHMARKS.md), by image size: at 32×32 a step is short enough that the host's kernel launches
# bound TF32 and bf16 (GPU busy 41 % and 23 %); at 224² the GPU is the limit.  An H100 computes
# at about the same rates.  Smaller models than VGG19 at 32×32 are more launch-bound still.
GPU_FLOPS = {"small": {"fp32": 25.7e12, "tf32": 39.9e12, "bf16": 31.1e12},  # ≤ 64 px: 32×32 CIFAR-shaped
             "large": {"fp32": 65.1e12, "tf32": 188e12, "bf16": 377e12}}  # 224², ImageNet-shaped
SMALL_IMAGES = 64  # px: the largest side that takes the "small" rates
ASSUMED_CPU_FLOPS = 100e9  # one core of the CI machine: the quickstart runs measured 99–105 GFLOP/s (6 × MACs × images/s)
# One core, side by side with another job, beyond the training arithmetic (BENCHMARKS.md, "The ladder's
# cost"): forward passes alone (evaluations, re-initialization sweeps) run faster — the VGG19s of the
# ladder measured 135–150 GFLOP/s, a sweep 147 — and every SGD step (momentum, weight decay) reads and
# writes each parameter, its gradient and momentum, which a model with a 4096-wide head feels: fitted
# to the ladder's pilot steps of VGG19 at widths 1/8, 1/4 and 1/2 (30–73 M parameters) within 11 %.
CPU_FORWARD_FLOPS = 140e9
CPU_SECONDS_PER_PARAMETER_STEP = 5e-9


@dataclass(frozen=True)
class Data:
    """The sizes of a converted dataset."""

    n_train: int
    n_test: int
    height: int
    width: int
    channels: int
    classes: int
    train_bytes: int  # the training .beton
    test_bytes: int
    order: str = "random"  # how training reads it (DatasetSpec.training_order)
    val_fraction: float = 0.0  # of the training file held out for validation

    @property
    def image_bytes(self) -> int:
        return self.height * self.width * self.channels

    @property
    def n_val(self) -> int:
        return round(self.n_train * self.val_fraction)

    @property
    def n_trained(self) -> int:
        """Images a training epoch passes over: the training file less its validation split."""
        return self.n_train - self.n_val


def source_size(spec: DatasetSpec) -> tuple[int, int, int, int, int, int]:
    """(n_train, n_test, height, width, channels, classes) of ``spec``'s source, before any variant."""
    if spec.source == "synthetic":
        s = spec.synthetic
        return s.n_train, s.n_test, s.size, s.size, s.channels, s.num_classes
    return SOURCES[spec.source]


def data_size(spec: DatasetSpec) -> Data:
    """Sizes of ``spec`` once converted: images after padding, subsets and channels, files as FFCV writes them."""
    n_train, n_test, h, w, c, classes = source_size(spec)
    if spec.source == "imagenet":
        area = IMAGENET_AREA_AT_500 * min(1.0, spec.max_resolution / 500) ** 2
        stored = area * 3 * (spec.compress_probability * JPEG_RATIO + 1 - spec.compress_probability)
        h = w = spec.image_size
        return Data(n_train, n_test, h, w, c, classes, int(n_train * stored), int(n_test * stored),
                    spec.training_order(), spec.val_fraction)
    h, w = h + 2 * spec.pad, w + 2 * spec.pad
    n_train, n_test, c = spec.train_images or n_train, spec.test_images or n_test, spec.channels or c
    return Data(n_train, n_test, h, w, c, classes, beton_bytes(n_train, h * w * c), beton_bytes(n_test, h * w * c),
                spec.training_order(), spec.val_fraction)


FFCV_PAGE = 8 * MB  # DatasetWriter's default page size
WRITER_WORKERS = 8  # the convert rule's threads on a cluster (profiles/default): each may leave a page part-filled


def beton_bytes(n: int, image_bytes: int) -> int:
    """Size of an FFCV file of ``n`` raw images: whole pages of pixels, one page begun by each
    writer worker, and 24 bytes per sample of allocation table (checked on files FFCV wrote)."""
    return (math.ceil(n * image_bytes / FFCV_PAGE) + WRITER_WORKERS) * FFCV_PAGE + 24 * n


@dataclass(frozen=True)
class Model:
    """Sizes of a model: parameters (all, conv layers', largest conv layer's), forward
    multiply-accumulates per image (all, and from each conv layer on), largest activation."""

    params: int
    conv_params: int
    largest_conv: int
    macs: int
    macs_from_conv: tuple[int, ...]  # MACs of the layers from conv layer l to the output, per l
    activations: int  # elements of every layer's output for one image (what backward keeps)
    filters: int  # of every conv layer (rows of an epoch's filter table)

    @property
    def state_bytes(self) -> int:
        return 4 * self.params

    @property
    def conv_bytes(self) -> int:
        return 4 * self.conv_params


@functools.lru_cache(maxsize=None)
def model_size(train: TrainSpec, channels: int, classes: int, size: int) -> Model:
    """:class:`Model` of ``train.model`` for ``channels`` × ``size``² inputs, measured on shapes only.

    Remembered on disk (:func:`_remembered_sizes`): every Snakemake start checks the config and
    sizes every job with it, and measuring needs torch and torchvision, ~3.5 s of importing."""
    import dataclasses
    import json

    key = json.dumps([dataclasses.asdict(train.model), channels, classes, size], sort_keys=True)
    path, sizes = _remembered_sizes()
    if key in sizes:
        return Model(**{**sizes[key], "macs_from_conv": tuple(sizes[key]["macs_from_conv"])})
    model = _measured_size(train, channels, classes, size)
    if path is not None:
        from .checkpoints import atomic_write

        entries = json.dumps({**_remembered_sizes()[1], key: dataclasses.asdict(model)})
        with contextlib.suppress(OSError):  # a cache: a read-only home costs the measuring only
            atomic_write(path, lambda tmp: tmp.write_text(entries))
    return model


def _remembered_sizes() -> tuple[Path | None, dict]:
    """(the cache file of :func:`model_size`, its entries): under ``$XDG_CACHE_HOME/convbias``
    (``~/.cache``), named by the text of the code that builds and measures models, so that a
    change to it measures again."""
    import hashlib
    import json
    import os

    code = hashlib.sha256()
    for module in ("models.py", "resources.py"):
        code.update((Path(__file__).parent / module).read_bytes())
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(home) / "convbias" / f"model-sizes-{code.hexdigest()[:16]}.json"
    try:
        return path, json.loads(path.read_text())
    except (OSError, ValueError):
        return path, {}


def _measured_size(train: TrainSpec, channels: int, classes: int, size: int) -> Model:
    """:func:`model_size`, measured: the model built on PyTorch's ``meta`` device, one image through it."""
    import torch

    from .models import build_model, conv_layers, sequential_layers

    with torch.device("meta"):
        model = build_model(train.model, channels, classes, size)
        x = torch.empty(1, channels, size, size)
        macs, activations, conv_at = [], 0, []
        convs = {id(conv) for _, conv in conv_layers(model)}
        for layer in sequential_layers(model):
            y = layer(x)
            if isinstance(layer, torch.nn.Conv2d):
                macs.append(y.numel() * layer.weight[0].numel())
            elif isinstance(layer, torch.nn.Linear):
                macs.append(layer.in_features * layer.out_features)
            else:
                macs.append(0)
            if id(layer) in convs:
                conv_at.append(len(macs) - 1)
            activations += y.numel()
            x = y
    conv_sizes = [sum(p.numel() for p in conv.parameters()) for _, conv in conv_layers(model)]
    return Model(params=sum(p.numel() for p in model.parameters()), conv_params=sum(conv_sizes),
                 largest_conv=max(conv_sizes), macs=sum(macs),
                 macs_from_conv=tuple(sum(macs[i:]) for i in conv_at), activations=activations,
                 filters=sum(conv.out_channels for _, conv in conv_layers(model)))


def model_of(exp: ExperimentSpec, data: Data) -> Model:
    """:class:`Model` of experiment ``exp`` trained on ``data``."""
    return model_size(exp.train, data.channels, data.classes, data.height)


def train_seconds(exp: ExperimentSpec, data: Data, measured: float | None = None) -> float:
    """Seconds of one training run's arithmetic (6 FLOPs per multiply-accumulate and image) at its
    rate; on the CPU at the calibrated rate, also its SGD steps' pass over the parameters."""
    model = model_of(exp, data)
    rate, source = flops_rate(exp, data, measured)
    seconds = 6 * model.macs * data.n_trained * exp.train.epochs / rate
    if source == "calibrated":
        steps = math.ceil(data.n_trained / exp.train.batch_size) * exp.train.epochs
        seconds += steps * model.params * CPU_SECONDS_PER_PARAMETER_STEP
    return seconds


def forward_rate(exp: ExperimentSpec, data: Data, measured: float | None = None) -> float:
    """FLOP/s of forward passes alone (evaluation, re-initialization): the training rate, but on the
    CPU at the calibrated rate :data:`CPU_FORWARD_FLOPS`."""
    rate, source = flops_rate(exp, data, measured)
    return CPU_FORWARD_FLOPS if source == "calibrated" else rate


def evaluation_seconds(exp: ExperimentSpec, data: Data, measured: float | None = None) -> float:
    """Seconds of one run's evaluations: validation and test sets after every epoch and at epoch 0,
    forward only (2 FLOPs per multiply-accumulate and image) at :func:`forward_rate`."""
    images = (data.n_val + data.n_test) * (exp.train.epochs + 1)
    return 2 * model_of(exp, data).macs * images / forward_rate(exp, data, measured)


# What a training job spends outside its epochs' arithmetic: start-up (Python, torch, FFCV, CUDA,
# cuDNN's search), the commit of epoch 0, waiting for the last commit, publishing.  GPU: issue 27
# measured 45–60 s per VGG19 job on an H200, per-epoch commits included, before they moved to a
# background thread (convbias.runs.commits.BackgroundCommits); not measured since.  CPU: the quickstart's
# jobs on this CI-like machine (2 cores, jobs side by side), so that the estimated training jobs
# come within 5 % of their measured wall times (BENCHMARKS.md).
JOB_SECONDS = {"gpu": 45.0, "cpu": 6.0}
FILTERS_READ = 0.5e9  # bytes/s a filters job reads and hashes the run's files at (one core)
TABLE_SECONDS = 5.0  # a CPU job's start-up and writing: filters, measure, figure


def train_job_seconds(exp: ExperimentSpec, data: Data, measured: float | None = None) -> float:
    """Wall seconds of one training job, one per GPU: its training and evaluation arithmetic and
    :data:`JOB_SECONDS`."""
    start = JOB_SECONDS["cpu" if exp.device == "cpu" else "gpu"]
    return start + train_seconds(exp, data, measured) + evaluation_seconds(exp, data, measured)


def filters_seconds(exp: ExperimentSpec, data: Data) -> float:
    """Wall seconds of one filters job: it reads (and checks) every epoch's file of a run."""
    return TABLE_SECONDS + run_bytes(exp.train, model_of(exp, data)) / FILTERS_READ


def convert_seconds(spec: DatasetSpec) -> float:
    """Wall seconds of converting dataset ``spec``."""
    data = data_size(spec)
    rate = 400 if spec.source == "imagenet" else 20_000  # images/s: JPEG encoding on 8 cores; raw arrays
    return (data.n_train + data.n_test) / rate


@dataclass(frozen=True)
class Needs:
    """What one job asks for: memory and disk in MB, runtime in minutes; and, for the plan,
    the device memory of a GPU job and its hours of compute."""

    mem_mb: int
    disk_mb: int
    runtime: int
    device_mb: int = 0
    hours: float = 0.0


def _mb(value_bytes: float) -> int:
    return int(math.ceil(value_bytes * MARGIN / MB))


def _minutes(seconds: float) -> int:
    return max(10, int(math.ceil(seconds * MARGIN / 60)))


def run_bytes(train: TrainSpec, model: Model) -> int:
    """Disk of a finished run: every epoch's file under the snapshot policy, plus the history."""
    if train.snapshots == "conv":
        return 2 * model.state_bytes + max(0, train.epochs - 1) * model.conv_bytes
    return (train.epochs + 1) * model.state_bytes


def training_disk_bytes(train: TrainSpec, model: Model) -> int:
    """Disk of a run while it trains: its finished files and the last epoch's momentum."""
    return run_bytes(train, model) + model.state_bytes


def flops_rate(exp: ExperimentSpec, data: Data, measured: float | None = None) -> tuple[float, str]:
    """Training FLOP/s of ``exp``'s device on ``data``, and where the number comes from:
    ``measured`` (this study's own runs), ``calibrated`` (CPU: the quickstart's runs) or
    ``benchmarked`` (GPU: the GPU check's rates for this image size and precision)."""
    if measured:
        return measured, "measured"
    if exp.device == "cpu":
        return ASSUMED_CPU_FLOPS, "calibrated"
    size = "small" if max(data.height, data.width) <= SMALL_IMAGES else "large"
    return GPU_FLOPS[size][exp.train.precision] * exp.gpus, "benchmarked"


def train_needs(exp: ExperimentSpec, data: Data, measured: float | None = None) -> Needs:
    """One training job (one seed): host memory of all its processes (one per GPU), device memory
    of one GPU, hours summed over its GPUs."""
    model = model_of(exp, data)
    batch = exp.train.batch_size // max(1, exp.gpus)  # each process's share (memory per process and GPU)
    # host: weights and momentum; the copies of the commits in flight while the next epochs train
    # (convbias.runs.commits.BackgroundCommits: a resume state, weights and momentum, and an epoch's
    # snapshot), the file being written; the loader's batches (uint8 and float)
    host = BASE_MB * MB + 6 * model.state_bytes + 4 * batch * data.image_bytes * 5
    if data.order == "quasi_random":  # over FFCV's own page cache: 2 × batch pages of 8 MiB
        host += 2 * batch * 8 * MB
    # device: weights, gradients, momentum; each layer's output kept for backward (and its gradient)
    device = 3 * model.state_bytes + 2 * 4 * batch * model.activations
    host *= exp.gpus if exp.device != "cpu" else 1  # one process per GPU in the job
    seconds = train_job_seconds(exp, data, measured)
    disk = training_disk_bytes(exp.train, model)
    return Needs(_mb(host), _mb(disk), _minutes(seconds), _mb(device) if exp.device != "cpu" else 0,
                 seconds / 3600 * (exp.gpus if exp.device != "cpu" else 0))


def reinit_sources(exp: ExperimentSpec) -> int:
    """Sources a sweep evaluates for each conv layer: ``rand`` and each of its epochs but the final one
    (whose weights are the final weights: its accuracy is known)."""
    return 1 + sum(e != exp.train.epochs for e in exp.swept_epochs())


def reinit_seconds(exp: ExperimentSpec, data: Data, measured: float | None = None) -> float:
    """Wall seconds of one re-initialization sweep (one seed, on one GPU or one core): the test set
    through the model once, then from each conv layer on for each of its sources
    (:func:`reinit_sources`), and :data:`JOB_SECONDS`."""
    model = model_of(exp, data)
    forward = data.n_test * (model.macs + reinit_sources(exp) * sum(model.macs_from_conv))
    rate = forward_rate(exp, data, measured) / max(1, exp.gpus)  # one GPU
    return JOB_SECONDS["gpu" if exp.device != "cpu" else "cpu"] + 2 * forward / rate  # forward only: 2 FLOPs per MAC


def reinit_needs(exp: ExperimentSpec, data: Data, measured: float | None = None) -> Needs:
    """One re-initialization sweep (one seed): every conv layer reset to each of its sources."""
    model = model_of(exp, data)
    test = data.n_test * data.image_bytes
    host = BASE_MB * MB + 3 * model.state_bytes + test + 2 * 4 * model.largest_conv
    seconds = reinit_seconds(exp, data, measured)
    device = test + model.state_bytes if exp.device != "cpu" else 0
    return Needs(_mb(host), 10, _minutes(seconds), _mb(device), seconds / 3600 if exp.device != "cpu" else 0)


def filters_needs(exp: ExperimentSpec, data: Data) -> Needs:
    """One filter table (one seed): every epoch's conv weights, read one epoch at a time."""
    model = model_of(exp, data)
    rows = (exp.train.epochs + 1) * model.filters
    host = BASE_MB * MB + 2 * model.state_bytes + 200 * rows
    return Needs(_mb(host), _mb(40 * rows), _minutes(filters_seconds(exp, data)))


def convert_needs(spec: DatasetSpec) -> Needs:
    """Converting one dataset: the arrays in memory (raw sources) or the writer's workers (JPEG)."""
    data = data_size(spec)
    if spec.source == "imagenet":
        host = BASE_MB * MB + 8 * 2 * IMAGENET_AREA_AT_500 * 3 * 64  # 8 writer workers with a few images each
    else:
        host = BASE_MB * MB + 3 * (data.n_train + data.n_test) * data.image_bytes
    return Needs(_mb(host), _mb(data.train_bytes + data.test_bytes), _minutes(convert_seconds(spec)))

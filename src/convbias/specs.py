"""One typed spec per config section, built from a config entry with the schema's defaults.

``DatasetSpec`` (a ``datasets`` entry), ``ExperimentSpec`` (an ``experiments`` entry, whose
``TrainSpec`` is everything that determines a training run but the seed and the data),
``PretrainedSpec``, ``FigureSpec`` and ``ClaimsSpec``; ``RunJob`` and ``DownloadSpec`` are what a
training or re-initialization job and a download job are given.  :func:`convbias.config.load_config`
builds them once for the workflow; each entry's spec has ``from_config(entry)`` for code and tests
that start from a dict.  A spec's ``identity()`` is what defines the output of a job built from it:
a rule passes the typed spec to its job with its identity as the parameter Snakemake records
(:func:`convbias.params.spec_param`), so that a change of the identity reruns the job and a change
of anything else in the spec (where the files are, where the job computes) does not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from .schema import default, with_defaults


def _plain(value):
    """``value`` as config data: lists for tuples, unset (None) keys left out."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _frozen(value):
    """Config data as a spec holds it: tuples for lists, at every level."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def digest(data) -> str:
    """A short SHA-256 of JSON-able ``data`` (keys sorted): the fingerprints of specs and runs."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Entry:
    """A spec whose fields are the keys of its config entry (``section``: its name in the schema)."""

    section: str

    @classmethod
    def from_config(cls, entry: dict):
        entry = with_defaults(cls.section, entry)
        return cls(**{f.name: _frozen(entry[f.name]) for f in fields(cls) if f.name in entry})

    def to_dict(self) -> dict:
        """The config entry (defaults filled in) this spec was built from."""
        return _plain(asdict(self))

    def identity(self) -> dict:
        """What defines the output of a job built from this spec: all of it."""
        return self.to_dict()


# ---------------------------------------------------------------------------------- datasets

@dataclass(frozen=True)
class SyntheticSpec:
    """``source: synthetic``: a seeded, learnable dataset of class-dependent patterns."""

    n_train: int
    n_test: int
    size: int
    channels: int
    num_classes: int
    seed: int


# Where a dataset's files are, whether they may be fetched and how they are read say nothing
# about its content (the training order is part of each training run's identity instead).
NOT_IDENTITY = ("path", "download", "order", "os_cache")


@dataclass(frozen=True)
class DatasetSpec(_Entry):
    """A ``datasets`` entry: a source and the variants baked into its conversion."""

    section = "dataset"
    source: str
    download: bool
    pad: int
    val_fraction: float
    split_seed: int
    hflip: bool
    pixel_range: str
    label_noise: float
    pixel_shuffle: str
    variant_seed: int
    max_resolution: int
    jpeg_quality: int
    compress_probability: float
    image_size: int
    order: str  # the training loader's sample order: auto | random | quasi_random
    path: str | None = None  # every source but synthetic
    os_cache: bool | None = None  # read through the OS page cache; None (unset): decided by the job
    synthetic: SyntheticSpec | None = None  # source synthetic
    channels: int | None = None  # 3 repeats a grayscale source's channel; None (unset): the source's
    train_images: int | None = None  # a fixed random subset of the source's training set; None: all
    test_images: int | None = None  # a fixed random subset of its test set; None: all

    @classmethod
    def from_config(cls, entry: dict) -> "DatasetSpec":
        spec = super().from_config({k: v for k, v in entry.items() if k != "synthetic"})
        if "synthetic" not in entry:
            return spec
        synthetic = with_defaults("dataset", {"synthetic": entry["synthetic"]})["synthetic"]
        return cls(**{**spec.__dict__, "synthetic": SyntheticSpec(**synthetic)})

    def identity(self) -> dict:
        """What decides the converted content: source, variants and their seeds, split, padding,
        pixel range … — everything but :data:`NOT_IDENTITY`, by name (a key left out of the config
        and a key set to its default are the same data; the order of the keys is no change)."""
        return {k: v for k, v in sorted(self.to_dict().items()) if k not in NOT_IDENTITY}

    def training_order(self) -> str:
        """The sample order of training on this dataset: ``order``, where ``auto`` is FFCV's advice —
        quasi-random for image folders (ImageNet-sized files that do not fit in memory), random
        otherwise.  Decided from the config, never from the machine, since it changes the run."""
        if self.order != "auto":
            return self.order
        return "quasi_random" if self.source == "imagenet" else "random"

    def fingerprint(self) -> str:
        """A hash of :meth:`identity`: stored in ``meta.json`` and part of every training run's
        fingerprint, so a run never resumes epochs trained on other data."""
        return digest(self.identity())


# ------------------------------------------------------------------------------- experiments

@dataclass(frozen=True)
class ModelSpec:
    """An architecture: name, width multiplier, classifier head (compact, torchvision or lenet) and dropout."""

    arch: str
    width: float = default("experiment", "model.width")
    head: str = default("experiment", "model.head")
    hidden: int = default("experiment", "model.hidden")
    dropout: float = default("experiment", "model.dropout")


@dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule: ``step`` (× gamma every step_size epochs), ``exponential`` (× gamma per epoch), ``constant``."""

    kind: str = default("experiment", "schedule.kind")
    gamma: float = default("experiment", "schedule.gamma")  # 10^(-1/25): the paper's smooth decay
    step_size: int = default("experiment", "schedule.step_size")

    def lr(self, base: float, epoch: int) -> float:
        """Learning rate of training epoch ``epoch`` (1-based)."""
        done = epoch - 1
        if self.kind == "constant":
            return base
        if self.kind == "step":
            return base * self.gamma ** (done // self.step_size)
        if self.kind == "exponential":
            return base * self.gamma**done
        raise ValueError(f"unknown schedule kind {self.kind!r}")


# The one renaming between the config and the code: the nested experiment keys whose TrainSpec
# field has a shorter name (every run's fingerprint is made of the field names, so they stay).
# Every other field of TrainSpec is the experiment key of its own name; config/README.md ("How a
# value travels") lists these, and a test holds it to this table.
RENAMED = {"init.scheme": "init", "init.std": "init_std", "optimizer.lr": "lr", "optimizer.momentum": "momentum",
           "optimizer.weight_decay": "weight_decay", "optimizer.batch_size": "batch_size"}


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a training run, except the seed and the data files."""

    model: ModelSpec
    init: str = default("experiment", "init.scheme")
    init_std: float = default("experiment", "init.std")
    lr: float = default("experiment", "optimizer.lr")
    momentum: float = default("experiment", "optimizer.momentum")
    weight_decay: float = default("experiment", "optimizer.weight_decay")
    batch_size: int = default("experiment", "optimizer.batch_size")
    schedule: Schedule = field(default_factory=Schedule)
    epochs: int = field(kw_only=True)  # required, as in the schema
    augment: bool = default("experiment", "augment")
    precision: str = default("experiment", "precision")  # fp32 (IEEE, no TF32) | tf32 | bf16 (autocast)
    compile: bool | str = default("experiment", "compile")  # torch.compile the model: false | true | reduce-overhead
    snapshots: str = default("experiment", "snapshots")  # full | conv: what each saved epoch keeps

    @classmethod
    def from_config(cls, exp: dict) -> "TrainSpec":
        """The spec of an ``experiments`` entry (missing keys take the schema's defaults; :data:`RENAMED`)."""
        exp = with_defaults("experiment", exp)
        renamed = {name: exp[section][key] for path, name in RENAMED.items() for section, key in [path.split(".")]}
        same = {f.name: exp[f.name] for f in fields(cls) if f.name not in (*renamed, "model", "schedule")}
        return cls(model=ModelSpec(**exp["model"]), schedule=Schedule(**exp["schedule"]), **renamed, **same)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSpec":
        return cls(**{**data, "model": ModelSpec(**data["model"]), "schedule": Schedule(**data["schedule"])})

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What defines a run of this spec (with its seed and data): all of it."""
        return self.to_dict()

    def fingerprint(self, **context) -> str:
        """A hash of the spec and ``context`` (seed, data): a resumed run continues only the same run."""
        return digest({"spec": self.to_dict(), **context})

    def run_fingerprint(self, seed: int, meta, order: str) -> str:
        """The fingerprint of one run: this spec, its ``seed``, its data (a ``DatasetMeta``) and
        its training loader's sample ``order`` — what its work folder and manifest record."""
        return self.fingerprint(seed=seed, data=meta.__dict__, order=order)


@dataclass(frozen=True)
class ExperimentSpec:
    """An ``experiments`` entry: its dataset and seeds, where it computes, and its training."""

    dataset: str
    seeds: tuple[int, ...]
    train: TrainSpec
    device: str
    gpus: int
    include_1x1: bool
    expect_learning: str  # generalize | memorize | none: what "learned" means for claim C0 (convbias.learning)
    stall_epochs: int  # warn after this many epochs at ln C (0: never); not part of the run's identity
    resume_every: float  # seconds between resume points (0: every epoch); not part of the run's identity
    reinit_epochs: tuple[int, ...] | None = None  # the epochs the sweep resets layers to (None: every saved epoch)

    @classmethod
    def from_config(cls, entry: dict) -> "ExperimentSpec":
        exp = with_defaults("experiment", entry)
        return cls(dataset=exp["dataset"], seeds=tuple(exp["seeds"]), train=TrainSpec.from_config(exp),
                   device=exp["device"], gpus=exp["gpus"], include_1x1=exp["include_1x1"],
                   expect_learning=exp["expect_learning"], stall_epochs=exp["stall_epochs"],
                   resume_every=exp["resume_every"],
                   reinit_epochs=tuple(exp["reinit_epochs"]) if "reinit_epochs" in exp else None)

    def swept_epochs(self) -> list[int]:
        """The saved epochs the re-initialization sweep resets each conv layer to, besides ``rand``:
        ``reinit_epochs``, or every saved epoch (0 to ``epochs``) when unset."""
        return list(range(self.train.epochs + 1) if self.reinit_epochs is None else self.reinit_epochs)

    def warn_after(self) -> int:
        """Epochs at ln C after which training says the run is not learning (0: never, as for a run meant not to)."""
        return 0 if self.expect_learning == "none" else self.stall_epochs


@dataclass(frozen=True)
class RunJob:
    """What a training or re-initialization job is given: its experiment, its dataset and the
    study's ``runs_per_gpu``.  Only the experiment's ``train`` defines the job's output (with the
    seed and the data files, its inputs); the rest says where and how the job computes."""

    experiment: ExperimentSpec
    dataset: DatasetSpec
    runs_per_gpu: int

    def identity(self) -> dict:
        return self.experiment.train.to_dict()

    @property
    def processes(self) -> int:
        """Training processes: one per GPU of the experiment (``gpus``), one on the CPU."""
        return 1 if self.experiment.device == "cpu" else self.experiment.gpus


@dataclass(frozen=True)
class DownloadSpec:
    """What a download job is given: the source whose files it fetches, and the config's mirror of it (None: torchvision's URLs)."""

    source: str
    mirror: dict | None = None

    def identity(self) -> str:
        return self.source


# ------------------------------------------------------------------------ pretrained, figures

@dataclass(frozen=True)
class PretrainedSpec(_Entry):
    """A ``pretrained`` entry: a network trained elsewhere, and a random initialization beside it."""

    section = "pretrained"
    weights: str
    arch: str
    init: str
    init_std: float
    seed: int
    include_1x1: bool
    download: bool


# The tables each figure kind reads (what they hold: convbias.figures.FigureKind; which files:
# workflow/rules/common.smk). Here and not beside the drawing code in convbias.figures, which
# imports matplotlib: Snakemake reads this at every start, even `snakemake -n`.
KIND_TABLES: dict[str, tuple[str, ...]] = {
    "measure": ("measure", "histories"),
    "histograms": ("filters",),
    "layer": ("measure",),
    "grid": ("measure",),
    "reinit": ("reinit",),
    "critical": ("measure", "reinit"),
    "claims_map": ("claims", "scales"),
    "pretrained": ("pretrained",),
}


@dataclass(frozen=True)
class FigureSpec(_Entry):
    """A ``figures`` entry; which keys a kind reads is documented in ``config/README.md``."""

    section = "figure"
    kind: str
    caption: str
    study: str
    layer: int  # kind layer: the layer drawn for every experiment
    columns: int  # kind grid: panels per row
    experiments: tuple[str, ...] | None = None  # every kind but pretrained
    pretrained: str | None = None  # kind pretrained
    seeds: tuple[int, ...] | None = None  # kind reinit: the runs drawn (None: every seed)
    seed: int | None = None  # kind histograms: the run drawn (None: the first seed)
    panels: tuple[tuple[int, ...], ...] | None = None  # kind measure: layers per panel (None: all in one)


@dataclass(frozen=True)
class ClaimsSpec(_Entry):
    """The ``claims`` section: thresholds of the claims scorecard (:mod:`convbias.claims`)."""

    section = "claims"
    band_alpha: float
    bias_p: float
    biased_fraction: float
    learned_accuracy_factor: float
    learned_loss_fraction: float
    reset_epoch: int
    correlation_p: float
    c5_paper_rho: float
    paper_n_l: float
    min_power: float
    interval: float
    test_val_gap: float
    train_accuracy: dict
    train_accuracy_tolerance: float

    @classmethod
    def from_config(cls, entry: dict) -> "ClaimsSpec":
        return cls(**with_defaults(cls.section, entry))

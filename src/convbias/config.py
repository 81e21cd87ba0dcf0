"""Typed experiment and figure specs built from the validated config (defaults already filled in)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


class ConfigError(Exception):
    """The config is inconsistent; the message names the key and the fix."""


@dataclass(frozen=True)
class ModelSpec:
    """An architecture: name, width multiplier, classifier head (compact or torchvision) and dropout."""

    arch: str
    width: float = 1.0
    head: str = "compact"
    hidden: int = 512
    dropout: float = 0.5


@dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule: ``step`` (× gamma every step_size epochs), ``exponential`` (× gamma per epoch), ``constant``."""

    kind: str = "exponential"
    gamma: float = 10 ** (-1 / 25)
    step_size: int = 25

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


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a training run, except the seed and the data files."""

    model: ModelSpec
    init: str = "kaiming_normal"
    init_std: float = 0.01
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: Schedule = field(default_factory=Schedule)
    epochs: int = 1
    augment: bool = True
    precision: str = "fp32"  # fp32 (IEEE, no TF32) | tf32 | bf16 (autocast); the paper's runs are fp32
    compile: bool = False  # torch.compile the model

    @classmethod
    def from_config(cls, exp: dict) -> "TrainSpec":
        opt, sched, init = exp["optimizer"], exp["schedule"], exp["init"]
        return cls(
            model=ModelSpec(**exp["model"]),
            init=init["scheme"], init_std=init["std"],
            lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"],
            batch_size=opt["batch_size"], schedule=Schedule(**sched),
            epochs=exp["epochs"], augment=exp["augment"], precision=exp["precision"], compile=exp["compile"],
        )

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSpec":
        return cls(**{**data, "model": ModelSpec(**data["model"]), "schedule": Schedule(**data["schedule"])})

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self, **context) -> str:
        """A hash of the spec and ``context`` (seed, data): a resumed run continues only the same run."""
        blob = json.dumps({"spec": self.to_dict(), **context}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Where a dataset's files are and whether they may be fetched say nothing about its content.
NOT_IDENTITY = ("path", "download")


def dataset_identity(spec: dict) -> dict:
    """The keys of a ``datasets`` entry that decide the converted content: source, variants and
    their seeds, split, padding, pixel range … — everything but :data:`NOT_IDENTITY`."""
    return {k: v for k, v in spec.items() if k not in NOT_IDENTITY}


def dataset_fingerprint(spec: dict) -> str:
    """A hash of :func:`dataset_identity`: stored in ``meta.json`` and part of every training
    run's fingerprint, so a run never resumes epochs trained on other data."""
    blob = json.dumps(dataset_identity(spec), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_references(config: dict) -> None:
    """Every experiment names a known dataset and every figure known experiments."""
    datasets, experiments = config["datasets"], config["experiments"]
    for name, exp in experiments.items():
        if exp["dataset"] not in datasets:
            raise ConfigError(
                f"experiments.{name}.dataset is {exp['dataset']!r}, which is not under datasets "
                f"(known: {', '.join(sorted(datasets)) or 'none'})"
            )
        if exp.get("gpus", 1) > 1 and exp["optimizer"]["batch_size"] % exp["gpus"]:
            raise ConfigError(f"experiments.{name}.optimizer.batch_size {exp['optimizer']['batch_size']} is not "
                              f"divisible by experiments.{name}.gpus {exp['gpus']}; change one of them")
    for name, fig in config["figures"].items():
        if fig["kind"] == "pretrained":
            if fig["pretrained"] not in config.get("pretrained", {}):
                raise ConfigError(f"figures.{name}.pretrained is {fig['pretrained']!r}, which is not under pretrained "
                                  f"(known: {', '.join(sorted(config.get('pretrained', {}))) or 'none'})")
            continue
        for exp in fig["experiments"]:
            if exp not in experiments:
                raise ConfigError(
                    f"figures.{name}.experiments names {exp!r}, which is not under experiments "
                    f"(known: {', '.join(sorted(experiments)) or 'none'})"
                )
        for seed in fig.get("seeds", []):
            if seed not in experiments[fig["experiments"][0]]["seeds"]:
                raise ConfigError(f"figures.{name}.seeds has {seed}, which is not one of experiment "
                                  f"{fig['experiments'][0]}'s seeds")
        seed = fig.get("seed")
        if seed is not None and seed not in experiments[fig["experiments"][0]]["seeds"]:
            raise ConfigError(f"figures.{name}.seed {seed} is not one of experiment {fig['experiments'][0]}'s seeds")


def config_errors(config: dict, schema_path: str) -> list[str]:
    """Every violation of the config schema, one line each, naming the key by its dotted path."""
    import jsonschema
    import yaml

    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "the top level"
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            unknown = sorted(set(error.instance) - set(known))
            message = f"unknown key {', '.join(map(repr, unknown))}" + (f" (known: {', '.join(known)})" if known else "")
        else:
            message = error.message
        lines.append(f"{where}: {message}")
    return lines

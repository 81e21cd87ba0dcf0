"""The config: its schema (the one home of every default), its loader, and the typed training spec.

``config.schema.yaml`` (beside this module) describes every key; :func:`load_config` checks a
config against it, fills in the schema's defaults and checks that the names it refers to exist.
Code that takes a config entry (a dataset, an experiment, a figure) gets its missing keys from
:func:`with_defaults`, never from a default of its own.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
SECTIONS = {"datasets": "dataset", "experiments": "experiment", "pretrained": "pretrained", "figures": "figure"}


@functools.cache
def schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill(node: dict, value: dict) -> dict:
    for key, sub in node.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if isinstance(value.get(key), dict) and "properties" in sub:
            _fill(sub, value[key])
    return value


def with_defaults(kind: str, entry: dict) -> dict:
    """A copy of one config entry of ``kind`` (dataset, experiment, pretrained, figure) with the
    schema's defaults filled in, at every level."""
    return _fill(schema()["$defs"][kind], copy.deepcopy(entry))


def default(kind: str, key: str):
    """The schema's default of ``key`` (dotted, e.g. ``optimizer.lr``) in an entry of ``kind``."""
    node = schema()["$defs"][kind]
    for part in key.split("."):
        node = node["properties"][part]
    return copy.deepcopy(node["default"])


class ConfigError(Exception):
    """The config is inconsistent; the message names the key and the fix."""


@dataclass(frozen=True)
class ModelSpec:
    """An architecture: name, width multiplier, classifier head (compact or torchvision) and dropout."""

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
    compile: bool = default("experiment", "compile")  # torch.compile the model

    @classmethod
    def from_config(cls, exp: dict) -> "TrainSpec":
        """The spec of an ``experiments`` entry (missing keys take the schema's defaults)."""
        exp = with_defaults("experiment", exp)
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
    their seeds, split, padding, pixel range … — everything but :data:`NOT_IDENTITY`, with the
    schema's defaults filled in (a key left out and a key set to its default are the same data)."""
    return {k: v for k, v in with_defaults("dataset", spec).items() if k not in NOT_IDENTITY}


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
        if exp["gpus"] > 1 and exp["optimizer"]["batch_size"] % exp["gpus"]:
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


def config_errors(config: dict) -> list[str]:
    """Every violation of the config schema, one line each, naming the key by its dotted path."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
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


def load_config(config: dict) -> None:
    """Check ``config`` against the schema, fill in the schema's defaults (in place) and check
    its references; raises ConfigError naming every bad key (see ``config/README.md``)."""
    errors = config_errors(config)
    if errors:
        raise ConfigError("invalid config (keys are described in config/README.md):\n  " + "\n  ".join(errors))
    _fill(schema(), config)
    for section, kind in SECTIONS.items():
        for name, entry in config.get(section, {}).items():
            config[section][name] = with_defaults(kind, entry)
    try:
        check_references(config)
    except ConfigError as err:
        raise ConfigError(f"invalid config: {err}") from None

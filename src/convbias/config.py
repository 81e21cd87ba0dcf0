"""The study's config: checked against the schema, defaults filled in, names checked, typed.

:func:`load_config` is called once by ``workflow/rules/common.smk``; it returns a :class:`Study`
of typed specs (:mod:`convbias.specs`), which the rules hand their jobs (:mod:`convbias.params`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import fill, schema, schema_errors, with_defaults
from .specs import ClaimsSpec, DatasetSpec, ExperimentSpec, FigureSpec, PretrainedSpec


class ConfigError(Exception):
    """The config is inconsistent; the message names the key and the fix."""


@dataclass(frozen=True)
class Study:
    """Every entry of the config, typed."""

    datasets: dict[str, DatasetSpec]
    experiments: dict[str, ExperimentSpec]
    pretrained: dict[str, PretrainedSpec]
    figures: dict[str, FigureSpec]
    claims: ClaimsSpec
    runs_per_gpu: int  # one-GPU jobs that share each GPU on a local machine (workflow/rules/common.smk)
    mirrors: dict[str, dict]  # per source, where its download is fetched from instead of torchvision's URLs


SECTIONS = {"datasets": ("dataset", DatasetSpec), "experiments": ("experiment", ExperimentSpec),
            "pretrained": ("pretrained", PretrainedSpec), "figures": ("figure", FigureSpec)}


def _known(names) -> str:
    return ", ".join(sorted(names)) or "none"


def _check_input_size(name: str, exp, dataset) -> None:
    """The model runs on the dataset's images: a VGG's five poolings need at least 32×32 pixels
    (28×28 MNIST needs ``pad: 2``), found here rather than as a torch error inside the job."""
    from .resources import data_size, model_size

    data = data_size(dataset)
    try:
        model_size(exp.train, data.channels, data.classes, data.height)
    except RuntimeError as err:
        hint = " (pad: 2 makes 28×28 images 32×32)" if data.height < 32 else ""
        raise ConfigError(f"experiments.{name}: {exp.train.model.arch} does not run on dataset {exp.dataset}'s "
                          f"{data.height}×{data.width} images ({str(err).splitlines()[0]}); enlarge them with the "
                          f"dataset's pad{hint} or choose a smaller model") from None


def _check_dataset(name: str, data) -> None:
    """A subset smaller than the source and channels that can be made, found before any job runs."""
    from .resources import source_size

    if data.source == "imagenet":
        for key in ("channels", "train_images", "test_images"):
            if getattr(data, key) is not None:
                raise ConfigError(f"datasets.{name}.{key} is not supported for an image folder (imagenet); leave it out")
        return
    n_train, n_test, _, _, channels, _ = source_size(data)
    if data.channels == 1 and channels == 3:
        raise ConfigError(f"datasets.{name}.channels is 1, but its source's images are in colour; only a grayscale "
                          f"channel can be repeated (channels: 3): leave it out")
    for key, n in (("train_images", n_train), ("test_images", n_test)):
        if (getattr(data, key) or 0) > n:
            raise ConfigError(f"datasets.{name}.{key} is {getattr(data, key)}, but its source has {n} "
                              f"{key.removesuffix('_images')} images; lower it or leave it out")


def check_references(study: Study) -> None:
    """Every dataset can be made, every experiment names a known dataset and every figure known
    experiments and seeds."""
    for name, data in study.datasets.items():
        _check_dataset(name, data)
        if data.training_order() == "quasi_random" and data.os_cache:
            raise ConfigError(f"datasets.{name}.os_cache is true, but its order is quasi_random, which reads "
                              f"through FFCV's own page cache; set os_cache to false or leave it out")
    for name, exp in study.experiments.items():
        if exp.dataset not in study.datasets:
            raise ConfigError(f"experiments.{name}.dataset is {exp.dataset!r}, which is not under datasets "
                              f"(known: {_known(study.datasets)})")
        _check_input_size(name, exp, study.datasets[exp.dataset])
        for epoch in exp.reinit_epochs or ():
            if epoch > exp.train.epochs:
                raise ConfigError(f"experiments.{name}.reinit_epochs has {epoch}, but the experiment trains "
                                  f"{exp.train.epochs} epochs; use saved epochs (0 to {exp.train.epochs})")
        if exp.reinit_epochs is not None and study.claims.reset_epoch not in exp.reinit_epochs:
            raise ConfigError(f"experiments.{name}.reinit_epochs leaves out epoch {study.claims.reset_epoch}, "
                              f"whose re-initialization drop claim C5 reads (claims.reset_epoch); add it")
        if exp.gpus > 1 and exp.train.batch_size % exp.gpus:
            raise ConfigError(f"experiments.{name}.optimizer.batch_size {exp.train.batch_size} is not "
                              f"divisible by experiments.{name}.gpus {exp.gpus}; change one of them")
    for name, fig in study.figures.items():
        if fig.kind == "pretrained":
            if fig.pretrained not in study.pretrained:
                raise ConfigError(f"figures.{name}.pretrained is {fig.pretrained!r}, which is not under pretrained "
                                  f"(known: {_known(study.pretrained)})")
            continue
        for exp in fig.experiments:
            if exp not in study.experiments:
                raise ConfigError(f"figures.{name}.experiments names {exp!r}, which is not under experiments "
                                  f"(known: {_known(study.experiments)})")
        for exp in fig.experiments:
            for seed in fig.seeds or ():
                if seed not in study.experiments[exp].seeds:
                    raise ConfigError(f"figures.{name}.seeds has {seed}, which is not one of experiment {exp}'s seeds")
        for exp in fig.experiments if fig.kind == "critical" else ():
            if 0 not in (study.experiments[exp].reinit_epochs or (0,)):
                raise ConfigError(f"figures.{name} draws each layer's drop when reset to epoch 0, but "
                                  f"experiments.{exp}.reinit_epochs leaves epoch 0 out; add it")
        first = fig.experiments[0]
        if fig.seed is not None and fig.seed not in study.experiments[first].seeds:
            raise ConfigError(f"figures.{name}.seed {fig.seed} is not one of experiment {first}'s seeds")
    for name in study.claims.train_accuracy:
        if name not in study.experiments:
            raise ConfigError(f"claims.train_accuracy names {name!r}, which is not under experiments "
                              f"(known: {_known(study.experiments)})")


def study_wide(config: dict) -> None:
    """The top-level ``precision`` (one ``--config precision=tf32`` for the whole study) becomes the
    precision of every experiment that does not set its own, in place, before the schema's defaults."""
    for entry in config["experiments"].values():  # the schema checked: a mapping of mappings
        entry.setdefault("precision", config["precision"])


def load_config(config: dict) -> Study:
    """Check ``config`` against the schema, fill in the schema's defaults (in place), build the
    typed specs and check their references; raises ConfigError naming every bad key (see
    ``config/README.md``)."""
    errors = schema_errors(config)
    if errors:
        raise ConfigError("invalid config (keys are described in config/README.md):\n  " + "\n  ".join(errors))
    fill(schema(), config)  # the top level (experiments are filled one by one below)
    study_wide(config)
    typed = {}
    for section, (kind, spec) in SECTIONS.items():
        entries = config.get(section, {})
        for name, entry in entries.items():
            entries[name] = with_defaults(kind, entry)
        typed[section] = {name: spec.from_config(entry) for name, entry in entries.items()}
    study = Study(**typed, claims=ClaimsSpec.from_config(config["claims"]), runs_per_gpu=config["runs_per_gpu"],
                  mirrors=config["mirrors"])
    try:
        check_references(study)
    except ConfigError as err:
        raise ConfigError(f"invalid config: {err}") from None
    return study

# Config validation, result paths and input functions: the only place that builds paths.

import re

from snakemake.exceptions import WorkflowError

from convbias.config import ConfigError, TrainSpec, dataset_identity, load_config
from convbias.figures import KINDS as FIGURE_KINDS

try:
    load_config(config)  # checks it against src/convbias/config.schema.yaml and fills in its defaults
except ConfigError as err:
    raise WorkflowError(str(err)) from None

DATASETS = config["datasets"]
EXPERIMENTS = config["experiments"]
FIGURES = config["figures"]
PRETRAINED = config.get("pretrained", {})


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    experiment=_alternatives(EXPERIMENTS),
    figure=_alternatives(FIGURES),
    pretrained=_alternatives(PRETRAINED),
    seed=r"\d+",


def dataset_files(dataset):
    """The converted dataset: FFCV train and test files and meta.json."""
    folder = f"results/data/{dataset}"
    return {"train": f"{folder}/train.beton", "test": f"{folder}/test.beton", "meta": f"{folder}/meta.json"}


def experiment_data(wildcards):
    return dataset_files(EXPERIMENTS[wildcards.experiment]["dataset"])


def run_dir(experiment, seed):
    """A finished training run: epoch{e:03d}.safetensors for e = 0..E and history.parquet."""
    return f"results/runs/{experiment}/seed{seed}"


def work_dir(wildcards):
    """Where a training run keeps its finished epochs and optimizer state until it is complete."""
    return f"results/resume/{wildcards.experiment}/seed{wildcards.seed}"


def seed_stats(experiment, seed):
    return f"results/stats/{experiment}/seed{seed}.parquet"


def measure_file(experiment):
    return f"results/stats/{experiment}/measure.parquet"


def reinit_file(experiment, seed):
    return f"results/reinit/{experiment}/seed{seed}.parquet"


def seeds(experiment):
    return EXPERIMENTS[experiment]["seeds"]


# CPU threads per GPU of a GPU job (FFCV loader threads): a local job uses this many, a Slurm job
# asks for them (cpus_per_gpu). Override: --set-threads train=N, --set-resources train:cpus_per_gpu=N.
CPUS_PER_GPU = 8


def experiment_gpus(wildcards):
    """GPUs of one training job: the experiment's ``gpus``, none when it computes on the CPU."""
    exp = EXPERIMENTS[wildcards.experiment]
    return 0 if exp["device"] == "cpu" else exp["gpus"]


def reinit_gpus(wildcards):
    """GPUs of one re-initialization job: one, none when the experiment computes on the CPU."""
    return min(1, experiment_gpus(wildcards))


def threads_for(gpus):
    """Threads of a job on ``gpus`` GPUs: CPUS_PER_GPU each; one on the CPU, where jobs run side by side."""
    return CPUS_PER_GPU * gpus or 1


def train_spec_params(wildcards):
    """Everything that determines a run but the seed: a change makes exactly this experiment outdated."""
    return TrainSpec.from_config(EXPERIMENTS[wildcards.experiment]).to_dict()


def pretrained_stats(name):
    """Filter cosines of a pretrained network (epoch 1) and of a random initialization (epoch 0)."""
    return f"results/stats/pretrained/{name}.parquet"


def figure_file(name):
    return f"results/{name}.pdf"


def figure_targets(study=None):
    return [figure_file(name) for name, fig in FIGURES.items() if study is None or fig["study"] == study]


def _runs(fig):
    return [(e, s) for e in fig["experiments"] for s in seeds(e)]


def figure_runs(wildcards):
    """(experiment, seed) of the runs whose histories a figure draws, in the order of its inputs."""
    fig = FIGURES[wildcards.figure]
    return _runs(fig) if "histories" in FIGURE_KINDS[fig["kind"]].tables else []


# The files of each table a figure kind reads (convbias.figures.KINDS says which tables it reads).
FIGURE_TABLES = {
    "measure": lambda fig: [measure_file(e) for e in fig["experiments"]],
    "histories": lambda fig: [run_dir(e, s) for e, s in _runs(fig)],
    "filters": lambda fig: [seed_stats(fig["experiments"][0], fig.get("seed", seeds(fig["experiments"][0])[0]))],
    "reinit": lambda fig: [reinit_file(e, s) for e in fig["experiments"] for s in fig.get("seeds", seeds(e))],
    "pretrained": lambda fig: [pretrained_stats(fig["pretrained"])],
}


def figure_inputs(wildcards):
    """The tables a figure is drawn from, by its kind."""
    fig = FIGURES[wildcards.figure]
    return {table: FIGURE_TABLES[table](fig) for table in FIGURE_KINDS[fig["kind"]].tables}

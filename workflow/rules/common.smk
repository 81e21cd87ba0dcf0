# Config validation, result paths and input functions: the only place that builds paths.

import dataclasses
import re

from convbias.config import ConfigError, load_config
from convbias.data.downloads import DOWNLOADABLE, download_files, needs_download
from convbias.plan import target_figures
from convbias.params import ShownAs, shown, spec_param
from convbias.specs import KIND_TABLES, DownloadSpec, RunJob

try:
    # checked against src/convbias/config.schema.yaml, defaults filled in, typed (convbias.specs)
    STUDY = load_config(config)
except ConfigError as err:
    # its sentence alone: Snakemake prints every exception raised in a workflow file as "WorkflowError
    # in file …, line …:" with a traceback frame (snakemake.exceptions.format_exception_to_string);
    # an exit is printed as it is, and ends Snakemake with status 1
    sys.exit(f"error: {err}")

# The software environment of every rule with a script (--software-deployment-method conda).
ENV = "../envs/convbias.yaml"

DATASETS = STUDY.datasets
EXPERIMENTS = STUDY.experiments
FIGURES = STUDY.figures
PRETRAINED = STUDY.pretrained


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


def dataset_downloads(dataset):
    """The downloaded files a dataset is read from (made by download_<source>); none when its path has them."""
    spec = DATASETS[dataset]
    return download_files(spec.source) if needs_download(spec) else []


def experiment_data(wildcards):
    return dataset_files(EXPERIMENTS[wildcards.experiment].dataset)


def run_dir(experiment, seed):
    """A finished training run: epoch{e:03d}.safetensors for e = 0..E and history.parquet."""
    return f"results/runs/{experiment}/seed{seed}"


def work_dir(wildcards):
    """Where a training run keeps its finished epochs and optimizer state until it is complete."""
    return f"results/resume/{wildcards.experiment}/seed{wildcards.seed}"


def filters_file(experiment, seed):
    """The filter table of one run: a row per (epoch, layer, filter) with its cosine."""
    return f"results/filters/{experiment}/seed{seed}.parquet"


def measure_file(experiment):
    """The measure table of an experiment: n_l, mean cosine, p-value per (seed, epoch, layer)."""
    return f"results/measure/{experiment}.parquet"


def reinit_file(experiment, seed):
    return f"results/reinit/{experiment}/seed{seed}.parquet"


def seeds(experiment):
    return EXPERIMENTS[experiment].seeds


# CPU threads per GPU of a GPU job (FFCV loader threads): a local job uses this many, a Slurm job
# asks for them (cpus_per_gpu). Override: --set-threads train=N, --set-resources train:cpus_per_gpu=N.
CPUS_PER_GPU = 8


def experiment_gpus(wildcards):
    """GPUs of one training job: the experiment's ``gpus``, none when it computes on the CPU."""
    exp = EXPERIMENTS[wildcards.experiment]
    return 0 if exp.device == "cpu" else exp.gpus


def reinit_gpus(wildcards):
    """GPUs of one re-initialization job: one, none when the experiment computes on the CPU."""
    return min(1, experiment_gpus(wildcards))


# GPU sharing: on a local machine, `runs_per_gpu` one-GPU jobs (train, reinit) run side by side on
# each GPU (config/README.md). Snakemake's resources are integers, so the `gpu` resource counts
# places: a one-GPU job takes one, a data-parallel job all of its GPUs' places, and the limit the
# user gives (--resources gpu=N, in GPUs) is multiplied here, before the scheduler starts; the
# allocator (convbias.devices.claim_gpus) gives each job its place on a GPU. Under Slurm, jobs hold
# whole GPUs: runs_per_gpu is not used there.
GPU_SHARES = STUDY.runs_per_gpu if workflow.local_exec else 1
gpu_limit = workflow.global_resources.get("gpu")
if GPU_SHARES > 1 and gpu_limit is not None and isinstance(gpu_limit.value, int):
    workflow.global_resources["gpu"] = gpu_limit.value * GPU_SHARES
    print(
        f"runs_per_gpu {GPU_SHARES}: up to {workflow.global_resources['gpu'].value} one-GPU jobs at once on "
        f"--resources gpu={gpu_limit.value}",
        file=sys.stderr,
    )


def gpu_places(gpus):
    """A job's ``gpu`` resource: its GPUs, in places (one for a one-GPU job, which may share its GPU)."""
    return gpus * GPU_SHARES if gpus > 1 else gpus


def job_needs(kind):
    """Resources of a ``kind`` job (convert, train, filters, reinit) computed from the config by
    convbias.resources: ``mem_mb`` (times the attempt: a job killed for memory asks for more when
    retried), ``disk_mb`` and ``runtime`` in minutes (training: at most MAX_TRAIN_RUNTIME)."""
    from convbias.resources import convert_needs, data_size, filters_needs, reinit_needs, train_needs

    def needs(wildcards):
        if kind == "convert":
            return convert_needs(DATASETS[wildcards.dataset])
        exp = EXPERIMENTS[wildcards.experiment]
        compute = {"train": train_needs, "reinit": reinit_needs, "filters": filters_needs}[kind]
        return compute(exp, data_size(DATASETS[exp.dataset]))

    cap = MAX_TRAIN_RUNTIME if kind == "train" else None
    return {
        "mem_mb": lambda wildcards, attempt: needs(wildcards).mem_mb * attempt,
        "disk_mb": lambda wildcards: needs(wildcards).disk_mb,
        "runtime": lambda wildcards: min(needs(wildcards).runtime, cap or needs(wildcards).runtime),
    }


# A training job asks for at most a day: a longer one is resubmitted (retries in ./slurm) and
# resumes from its resume point; clusters commonly refuse longer jobs.
MAX_TRAIN_RUNTIME = 24 * 60


def threads_for(gpus):
    """Threads of a job on ``gpus`` GPUs: CPUS_PER_GPU each; one on the CPU, where jobs run side by side."""
    return CPUS_PER_GPU * gpus or 1


# Each job is handed the typed spec built here (convbias.params.spec_param). Snakemake records the
# spec's identity and reruns the job when that changes; the rest of the typed spec (paths, mirrors,
# device, GPU shares, resume points) reaches the job unrecorded: changing it reruns nothing.
def run_job(wildcards):
    """A training or re-initialization job's spec (convbias.specs.RunJob): its identity is everything
    that determines the run but the seed, so a change makes exactly this experiment outdated."""
    exp = EXPERIMENTS[wildcards.experiment]
    return spec_param(RunJob(exp, DATASETS[exp.dataset], STUDY.runs_per_gpu))


def download_job(source):
    """A download job's spec (convbias.specs.DownloadSpec): the source (its identity) and its mirror."""
    return spec_param(DownloadSpec(source, STUDY.mirrors.get(source)))


def pretrained_filters_file(name):
    """The filter table of a pretrained network (epoch 1) and of a random initialization (epoch 0)."""
    return f"results/filters/pretrained/{name}.parquet"


def pretrained_run(name):
    """The run folder of this study a ``pretrained`` weights file lies in (that run comes first), or none."""
    weights = PRETRAINED[name].weights
    return [run_dir(e, s) for e in EXPERIMENTS for s in seeds(e) if weights.startswith(run_dir(e, s) + "/")]


def figure_file(name):
    return f"results/{name}.pdf"


def figure_targets(study=None):
    return [figure_file(name) for name, fig in FIGURES.items() if study is None or fig.study == study]


def _runs(fig):
    """(experiment, seed) of every run a figure draws: its ``seeds`` of each experiment, or all."""
    return [(e, s) for e in fig.experiments for s in fig.seeds or seeds(e)]


def figure_runs(wildcards):
    """(experiment, seed) of the runs whose histories a figure draws, in the order of its inputs."""
    fig = FIGURES[wildcards.figure]
    return _runs(fig) if "histories" in KIND_TABLES[fig.kind] else []


# The files of each table a figure kind reads (convbias.specs.KIND_TABLES says which tables it reads).
def histogram_seed(fig):
    """The run a histogram figure draws: its ``seed``, or its experiment's first."""
    return seeds(fig.experiments[0])[0] if fig.seed is None else fig.seed


def figure_scales(wildcards):
    """The rows of a claims map's ``scales`` table: each experiment's width and epochs, and C5's reset epoch."""
    fig = FIGURES[wildcards.figure]
    if "scales" not in KIND_TABLES[fig.kind]:
        return []
    return [
        {
            "experiment": e,
            "width": EXPERIMENTS[e].train.model.width,
            "epochs": EXPERIMENTS[e].train.epochs,
            "reset_epoch": STUDY.claims.reset_epoch,
        }
        for e in fig.experiments
    ]


FIGURE_TABLES = {
    "measure": lambda fig: [measure_file(e) for e in fig.experiments],
    "histories": lambda fig: [run_dir(e, s) for e, s in _runs(fig)],
    "filters": lambda fig: [filters_file(fig.experiments[0], histogram_seed(fig))],
    "reinit": lambda fig: [reinit_file(e, s) for e, s in _runs(fig)],
    "pretrained": lambda fig: [pretrained_filters_file(fig.pretrained)],
    "claims": lambda fig: [claims_file(fig.study)],
}


def figure_inputs(wildcards):
    """The tables a figure is drawn from, by its kind."""
    fig = FIGURES[wildcards.figure]
    return {table: FIGURE_TABLES[table](fig) for table in KIND_TABLES[fig.kind] if table in FIGURE_TABLES}


def claims_file(study):
    """The claims scorecard of a study: results/claims.csv for the paper, results/<study>/claims.csv else."""
    return "results/claims.csv" if study == "paper" else f"results/{study}/claims.csv"


def evidence_dir(study):
    """The tables a study's scorecard read (convbias.evidence), to score it again without its runs."""
    return f"results/evidence/{study}"


def report_file(study, page):
    """A page of the study's report beside its scorecard: the scorecard itself, or its runs (convbias.report)."""
    return f"results/report/{study}/{page}.html"


def report_category(study):
    return "The paper's study" if study == "paper" else f"Study {study}"


def figure_report(wildcards):
    """Where the report lists a figure: its study, then the figure (by its paper number for fig1…fig24)."""
    fig = FIGURES[wildcards.figure]
    number = re.fullmatch(r"fig(\d+)", wildcards.figure)
    return {
        "category": report_category(fig.study),
        "subcategory": f"Figure {number.group(1)} of the paper" if number else "Figures",
        "labels": {
            "figure": wildcards.figure,
            "kind": fig.kind,
            "experiments": ", ".join(fig.experiments or [fig.pretrained or ""]),
        },
    }


def claims_experiments(study):
    """What the scorecard of ``study`` reads, per experiment of its figures: measure table, runs,
    re-initialization tables (those its reinit figures draw), the dataset's meta.json, and what
    learning means for it (expect_learning)."""
    figures = [f for f in FIGURES.values() if f.study == study and f.experiments]
    swept = {(e, s) for f in figures if "reinit" in KIND_TABLES[f.kind] for e, s in _runs(f)}
    experiments = dict.fromkeys(e for f in figures for e in f.experiments)
    return {
        e: {
            "measure": measure_file(e),
            "runs": {s: run_dir(e, s) for s in seeds(e)},
            "reinit": [reinit_file(e, s) for s in seeds(e) if (e, s) in swept],
            "meta": dataset_files(EXPERIMENTS[e].dataset)["meta"],
            "expect": EXPERIMENTS[e].expect_learning,
        }
        for e in experiments
    }


def claims_param(study):
    """What the claims job reads, by experiment (claims_experiments), shown in the report as counts:
    the files themselves are the job's inputs."""
    experiments = claims_experiments(study)

    def said(files):
        runs, sweeps = len(files["runs"]), len(files["reinit"])
        return (
            f"{runs} run{'s' * (runs != 1)}, {sweeps or 'no'} sweep{'s' * (sweeps != 1)}, "
            f"learning expected: {files['expect']}"
        )

    return ShownAs(experiments, "; ".join(f"{name}: {said(files)}" for name, files in experiments.items()))


def claims_spec(study):
    """The claims settings of ``study`` (convbias.specs.ClaimsSpec): the paper's stated train accuracies
    of its own experiments only."""
    experiments = claims_experiments(study)
    stated = {e: a for e, a in STUDY.claims.train_accuracy.items() if e in experiments}
    return dataclasses.replace(STUDY.claims, train_accuracy=stated)


def claims_inputs(study):
    files = claims_experiments(study).values()
    return (
        [f["measure"] for f in files]
        + [r for f in files for r in f["runs"].values()]
        + [r for f in files for r in f["reinit"]]
        + sorted({f["meta"] for f in files})
    )

# convbias: FFCV conversion → training per seed → statistics → re-initialization → figures.
# Every path is built in workflow/rules/common.smk; every key is documented in config/README.md.

import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# convbias from this checkout's src/, here and in every job: a job's conda environment
# (workflow/envs/convbias.yaml) does not install it
_SRC = Path(workflow.basedir) / "src"
if (_SRC / "convbias").is_dir():
    sys.path.insert(0, str(_SRC))
    # set, not required: the lint's envvars check is about variables a workflow needs from its user
    os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [str(_SRC), os.environ.get("PYTHONPATH")])))


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/reinit.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"


# A published run's work folder (results/resume/…) stays until the workflow has seen its job end:
# a job killed while publishing is one whose outputs Snakemake deletes, and the next attempt
# publishes the run again from that folder instead of training it again. The hooks drop those
# folders when no job of this workflow runs (convbias.runs.Run.forget).
onstart:
    # one workflow at a time on a results folder, also from another checkout sharing it (a symlink)
    from convbias.runs import ResultsBusy, Run, hold_results_lock

    try:
        hold_results_lock(Path("results"))
    except ResultsBusy as err:
        raise WorkflowError(str(err)) from None
    Run.forget("results")


onsuccess:
    from convbias.runs import Run

    Run.forget("results")


onerror:
    from convbias.runs import Run

    Run.forget("results")


localrules:
    all,
    quickstart,
    ladder,
    replication,
    smoke,
    cifar,
    download,
    measure,
    figure,
    pretrained_filters,


rule all:
    """Every data figure of the paper (figures of study paper) and its claims scorecard."""
    input:
        figure_targets(study="paper"),
        claims_file("paper"),
        evidence_dir("paper"),


rule cifar:
    """The paper figures whose experiments all train on CIFAR-10/100: no ImageNet needed."""
    input:
        [figure_file(name) for name in target_figures(STUDY, "cifar")],


rule smoke:
    """Minutes on any set-up: synthetic data, a 1-GPU and a 2-GPU (DDP) run, a figure of every kind."""
    input:
        figure_targets(study="smoke"),
        claims_file("smoke"),
        evidence_dir("smoke"),


rule quickstart:
    input:
        figure_targets(study="quickstart"),
        claims_file("quickstart"),
        evidence_dir("quickstart"),


rule ladder:
    """Rungs between the quickstart and the paper on two CPU cores: where each claim holds (results/ladder/)."""
    input:
        figure_targets(study="ladder"),
        claims_file("ladder"),
        evidence_dir("ladder"),


rule replication:
    """The ladder's rungs where C5 held, with fresh seeds 3-5 (results/replication/; config/README.md, "The ladder")."""
    input:
        figure_targets(study="replication"),
        claims_file("replication"),
        evidence_dir("replication"),

# convbias: FFCV conversion → training per seed → statistics → re-initialization → figures.
# Every path is built in workflow/rules/common.smk; every key is documented in config/README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/reinit.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"


localrules: all, quickstart, smoke, cifar, download, measure, figure, pretrained_filters


rule all:
    """Every data figure of the paper (figures of study paper) and its claims scorecard."""
    input:
        figure_targets(study="paper"),
        claims_file("paper"),


rule cifar:
    """The paper figures whose experiments all train on CIFAR-10/100: no ImageNet needed."""
    input:
        [figure_file(name) for name in target_figures(STUDY, "cifar")],


rule smoke:
    """Minutes on any set-up: synthetic data, a 1-GPU and a 2-GPU (DDP) run, a figure of every kind."""
    input:
        figure_targets(study="smoke"),
        claims_file("smoke"),


rule quickstart:
    input:
        figure_targets(study="quickstart"),
        claims_file("quickstart"),

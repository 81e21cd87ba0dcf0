rule filters:
    """Cosine of every filter with the all-ones direction (eq. 1), every epoch of one run."""
    input:
        run=run_dir("{experiment}", "{seed}"),
    output:
        # update: Snakemake leaves the old table for the job, which keeps it when only file times
        # changed (the same run, parameters and code: convbias.harness.write_unless_kept)
        update(filters_file("{experiment}", "{seed}")),
    log:
        "logs/filters/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/filters/{experiment}/seed{seed}.tsv"
    conda:
        ENV
    resources:
        **job_needs("filters"),
    params:
        epochs=lambda wildcards: EXPERIMENTS[wildcards.experiment].train.epochs,
        include_1x1=lambda wildcards: EXPERIMENTS[wildcards.experiment].include_1x1,
    script:
        "../scripts/filters.py"


rule measure:
    """n_l (eq. 2), mean cosine and binomial p-value per (seed, epoch, layer)."""
    input:
        lambda wildcards: [filters_file(wildcards.experiment, s) for s in seeds(wildcards.experiment)],
    output:
        measure_file("{experiment}"),
    log:
        "logs/measure/{experiment}.log",
    benchmark:
        "benchmarks/measure/{experiment}.tsv"
    conda:
        ENV
    script:
        "../scripts/measure.py"


rule pretrained_filters:
    """Filter cosines of a network trained elsewhere and of a random initialization of its architecture.

    The weights are read when the job runs: a missing torchvision file fails that job with one
    sentence saying where to put it (never a silent download), and `snakemake -n` still works.
    """
    input:
        lambda wildcards: pretrained_run(wildcards.pretrained),
    output:
        pretrained_filters_file("{pretrained}"),
    log:
        "logs/pretrained_filters/{pretrained}.log",
    conda:
        ENV
    params:
        spec=lambda wildcards: spec_param(PRETRAINED[wildcards.pretrained]),
    script:
        "../scripts/pretrained_filters.py"

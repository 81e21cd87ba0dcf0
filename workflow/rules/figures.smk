rule figure:
    """One figure of the config, drawn by the function of its kind in convbias.figures."""
    input:
        unpack(figure_inputs),
    output:
        report(
            figure_file("{figure}"),
            caption="../report/figure.rst",
            category=lambda wildcards: figure_report(wildcards)["category"],
            subcategory=lambda wildcards: figure_report(wildcards)["subcategory"],
            labels=lambda wildcards: figure_report(wildcards)["labels"],
        ),
    log:
        "logs/figure/{figure}.log",
    benchmark:
        "benchmarks/figure/{figure}.tsv"
    conda:
        ENV
    params:
        spec=lambda wildcards: spec_param(FIGURES[wildcards.figure]),
        runs=lambda wildcards: shown(figure_runs(wildcards)),
        scales=lambda wildcards: shown(figure_scales(wildcards)),
    script:
        "../scripts/figure.py"

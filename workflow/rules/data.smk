rule convert:
    """Write a dataset (source + variants) once to FFCV files."""
    output:
        **dataset_files("{dataset}"),
    log:
        "logs/convert/{dataset}.log",
    benchmark:
        "benchmarks/convert/{dataset}.tsv"
    params:
        # what the content depends on; path and download are read by the script, so that moving
        # the files or allowing downloads reschedules nothing
        identity=lambda wildcards: DATASETS[wildcards.dataset].identity(),
    threads: 2
    resources:
        **job_needs("convert"),
    script:
        "../scripts/convert.py"

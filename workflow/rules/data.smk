rule convert:
    """Write a dataset (source + variants) once to FFCV files."""
    output:
        **dataset_files("{dataset}"),
    params:
        spec=lambda wildcards: DATASETS[wildcards.dataset],
    threads: 2
    script:
        "../scripts/convert.py"

# Downloads run here, on the machine that runs Snakemake (a cluster's login node): compute jobs
# never touch the network. One rule per published source of the config's datasets.
for _source in sorted({d.source for d in DATASETS.values()} & set(DOWNLOADABLE)):

    rule:
        """Fetch a source's published files into resources/<source>, each checked against its MD5."""
        name:
            f"download_{_source}"
        output:
            download_files(_source),
        log:
            f"logs/download/{_source}.log",
        localrule: True
        conda:
            ENV
        params:
            # a function: Snakemake would format a plain string parameter, and lose the spec it carries
            spec=lambda wildcards, source=_source: download_job(source),
        script:
            "../scripts/download.py"


rule download:
    """Every download the config's datasets need (those whose path lacks the files)."""
    input:
        sorted({f for name in DATASETS for f in dataset_downloads(name)}),
    localrule: True


rule convert:
    """Write a dataset (source + variants) once to FFCV files."""
    input:
        lambda wildcards: dataset_downloads(wildcards.dataset),
    output:
        **dataset_files("{dataset}"),
    log:
        "logs/convert/{dataset}.log",
    benchmark:
        "benchmarks/convert/{dataset}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        **job_needs("convert"),
    params:
        # recorded: what the content depends on (its identity); path and download ride in the typed
        # spec unrecorded (moving the files reschedules nothing), and a download it reads is its input
        spec=lambda wildcards: spec_param(DATASETS[wildcards.dataset]),
    script:
        "../scripts/convert.py"

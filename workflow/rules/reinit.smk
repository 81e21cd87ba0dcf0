rule reinit:
    """Test accuracy with each conv layer reset to each saved epoch (and to a fresh draw)."""
    input:
        unpack(experiment_data),
        run=run_dir("{experiment}", "{seed}"),
    output:
        reinit_file("{experiment}", "{seed}"),
    log:
        "logs/reinit/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/reinit/{experiment}/seed{seed}.tsv"
    conda:
        ENV
    threads: lambda wildcards: threads_for(reinit_gpus(wildcards))
    resources:
        **job_needs("reinit"),
        gpu=reinit_gpus,
        cpus_per_gpu=CPUS_PER_GPU,
    params:
        spec=train_spec_params,
    script:
        "../scripts/reinit.py"

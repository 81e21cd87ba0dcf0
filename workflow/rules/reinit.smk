rule reinit:
    """Test accuracy with each conv layer reset to each saved epoch (and to a fresh draw)."""
    input:
        unpack(experiment_data),
        run=run_dir("{experiment}", "{seed}"),
    output:
        # update: Snakemake leaves the old table for the job, which keeps it when only file times
        # changed (the same run, test set, parameters and code: convbias.harness.write_unless_kept)
        update(reinit_file("{experiment}", "{seed}")),
    log:
        "logs/reinit/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/reinit/{experiment}/seed{seed}.tsv"
    conda:
        ENV
    threads: lambda wildcards: threads_for(reinit_gpus(wildcards))
    resources:
        **job_needs("reinit"),
        gpu=lambda wildcards: gpu_places(reinit_gpus(wildcards)),
        cpus_per_gpu=CPUS_PER_GPU,
    params:
        spec=run_job,
        epochs=lambda wildcards: shown(EXPERIMENTS[wildcards.experiment].swept_epochs()),
    script:
        "../scripts/reinit.py"

rule train:
    """Train one seed of an experiment, saving the weights of every epoch (0 = initialization).

    A killed job continues from its resume point when it runs again (see convbias.train).
    An experiment with gpus > 1 asks for that many GPUs and trains with DDP inside the job.
    """
    input:
        unpack(experiment_data),
    output:
        # update: Snakemake never deletes a published run before the job (it would, for a job it
        # saw killed, even when the run finished meanwhile); the job keeps it if it is this run,
        # intact, and replaces it when it publishes otherwise (convbias.runs.Run.published)
        update(directory(run_dir("{experiment}", "{seed}"))),
    log:
        "logs/train/{experiment}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{experiment}/seed{seed}.tsv"
    conda:
        ENV
    threads: lambda wildcards: threads_for(experiment_gpus(wildcards))
    resources:
        **job_needs("train"),
        gpu=lambda wildcards: gpu_places(experiment_gpus(wildcards)),
        cpus_per_gpu=CPUS_PER_GPU,
    params:
        spec=run_job,
        work=work_dir,
        order=lambda wildcards: DATASETS[EXPERIMENTS[wildcards.experiment].dataset].training_order(),
    script:
        "../scripts/train.py"

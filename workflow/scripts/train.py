"""Rule train: one seed of one experiment, resumable; several GPUs → DDP processes via torchrun."""

import os

from convbias.data.dataset import DatasetMeta
from convbias.harness import log_to, stops_with_one_sentence
from convbias.runs import Run

# this job's output goes to its rule's log file, which keeps the attempts before it
log_to(snakemake.log, keep_attempts=True)

# the typed spec the rule built (convbias.specs.RunJob): its experiment's training defines the run;
# where and how it computes (device, GPUs and their shares, os_cache, resume points) does not
job, inputs, seed = snakemake.params.spec.typed, snakemake.input, int(snakemake.wildcards.seed)
experiment, meta = job.experiment, DatasetMeta.load(inputs.meta)


def train() -> None:
    from convbias.data.loaders import use_os_cache
    from convbias.devices import job_gpus, job_memory, job_threads
    from convbias.train import launch, train_run

    threads = job_threads(snakemake.threads, job.processes)
    os_cache = use_os_cache(job.dataset.os_cache, snakemake.params.order, os.path.getsize(inputs.train),
                            job_memory(snakemake.resources.get("mem_mb")))
    options = {"out_dir": snakemake.output[0], "work_dir": snakemake.params.work, "device": experiment.device,
               "order": snakemake.params.order, "os_cache": os_cache, "stall_epochs": experiment.warn_after(),
               "resume_every": experiment.resume_every}
    # job_gpus first: before anything starts CUDA; torchrun's processes inherit it
    with job_gpus(experiment.device, job.processes, shares=job.runs_per_gpu):
        if job.processes > 1:
            launch({"spec": experiment.train.to_dict(), "seed": seed, "meta": inputs.meta, "train_file": inputs.train,
                    "test_file": inputs.test, "threads": max(1, threads // job.processes), **options}, job.processes)
        else:
            train_run(experiment.train, seed, meta, inputs.train, inputs.test, threads=threads, **options)


with stops_with_one_sentence():
    # a run found published and intact (its files touched or copied: Snakemake reruns the job by
    # file times) costs neither torch's import nor FFCV's; anything else trains, or resumes
    fingerprint = experiment.train.run_fingerprint(seed, meta, snakemake.params.order)
    if not Run.finished(snakemake.output[0], snakemake.params.work, fingerprint):
        train()

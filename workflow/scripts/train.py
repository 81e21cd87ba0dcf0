"""Rule train: one seed of one experiment, resumable; several GPUs → DDP processes via torchrun."""

import os

from convbias.specs import DatasetSpec, ExperimentSpec, TrainSpec
from convbias.data.loaders import use_os_cache
from convbias.data.dataset import DatasetMeta
from convbias.devices import job_gpus, job_memory, job_threads
from convbias.train import launch, train_run
from convbias.harness import log_to, stops_with_one_sentence

# this job's output goes to its rule's log file, which keeps the attempts before it
log_to(snakemake.log, keep_attempts=True)

seed, spec, inputs = int(snakemake.wildcards.seed), snakemake.params.spec, snakemake.input
# device and os_cache say where and how fast a run is computed, not what it is: read from the
# config here, not params (a changed param reruns the job)
experiment = ExperimentSpec.from_config(snakemake.config["experiments"][snakemake.wildcards.experiment])
processes = 1 if experiment.device == "cpu" else experiment.gpus  # (the gpu resource counts places: common.smk)
threads = job_threads(snakemake.threads, processes)
dataset = experiment.dataset
os_cache = use_os_cache(DatasetSpec.from_config(snakemake.config["datasets"][dataset]).os_cache, snakemake.params.order,
                        os.path.getsize(inputs.train), job_memory(snakemake.resources.get("mem_mb")))
options = {"out_dir": snakemake.output[0], "work_dir": snakemake.params.work, "device": experiment.device,
           "order": snakemake.params.order, "os_cache": os_cache, "stall_epochs": experiment.warn_after(),
           "resume_every": experiment.resume_every}
# job_gpus first: before anything starts CUDA; torchrun's processes inherit it
with job_gpus(experiment.device, processes, shares=snakemake.config["runs_per_gpu"]), stops_with_one_sentence():
    if processes > 1:
        launch({"spec": spec, "seed": seed, "meta": inputs.meta, "train_file": inputs.train, "test_file": inputs.test,
                "threads": max(1, threads // processes), **options}, processes)
    else:
        train_run(TrainSpec.from_dict(spec), seed, DatasetMeta.load(inputs.meta), inputs.train, inputs.test,
                  threads=threads, **options)

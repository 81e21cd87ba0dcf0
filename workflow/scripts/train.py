"""Rule train: one seed of one experiment, resumable; several GPUs → DDP processes via torchrun."""

from convbias.specs import TrainSpec
from convbias.data.dataset import DatasetMeta
from convbias.devices import job_gpus, job_threads
from convbias.train import launch, train_run

processes = int(snakemake.resources.get("gpu", 1) or 1)
threads = job_threads(snakemake.threads, processes)
seed, spec, inputs = int(snakemake.wildcards.seed), snakemake.params.spec, snakemake.input
options = {"out_dir": snakemake.output[0], "work_dir": snakemake.params.work, "device": snakemake.params.device}
with job_gpus(snakemake.params.device, processes):  # before anything starts CUDA; torchrun's processes inherit it
    if processes > 1:
        launch({"spec": spec, "seed": seed, "meta": inputs.meta, "train_file": inputs.train, "test_file": inputs.test,
                "threads": max(1, threads // processes), **options}, processes)
    else:
        train_run(TrainSpec.from_dict(spec), seed, DatasetMeta.load(inputs.meta), inputs.train, inputs.test,
                  threads=threads, **options)

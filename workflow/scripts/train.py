"""Rule train: one seed of one experiment, resumable; several GPUs → DDP processes via torchrun."""

from convbias.config import TrainSpec
from convbias.data.ffcv_io import DatasetMeta
from convbias.train import job_threads, launch, train_run

job = {
    "spec": snakemake.params.spec,
    "seed": int(snakemake.wildcards.seed),
    "meta": snakemake.input.meta,
    "train_file": snakemake.input.train,
    "test_file": snakemake.input.test,
    "out_dir": snakemake.output[0],
    "work_dir": snakemake.params.work,
    "device": snakemake.params.device,
}
processes = int(snakemake.resources.get("gpu", 1) or 1)
job["threads"] = job_threads(snakemake.threads, processes)
if processes > 1:
    launch({**job, "threads": max(1, job["threads"] // processes)}, processes)
else:
    spec, meta = TrainSpec.from_dict(job.pop("spec")), DatasetMeta.load(job.pop("meta"))
    train_run(spec, job.pop("seed"), meta, job.pop("train_file"), job.pop("test_file"), **job)

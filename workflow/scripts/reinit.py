"""Rule reinit: re-initialization robustness of one run on the test set."""

from convbias.devices import job_gpus, job_threads
from convbias.jobs import run_reinit
from convbias.specs import TrainSpec

with job_gpus(snakemake.params.device):  # before anything starts CUDA (the loaders do)
    table = run_reinit(TrainSpec.from_dict(snakemake.params.spec), int(snakemake.wildcards.seed), snakemake.input.meta,
                       snakemake.input.run, snakemake.input.test, snakemake.wildcards.experiment,
                       device=snakemake.params.device, threads=job_threads(snakemake.threads))
table.to_parquet(snakemake.output[0], index=False)

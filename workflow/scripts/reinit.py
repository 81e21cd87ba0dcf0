"""Rule reinit: re-initialization robustness of one run on the test set."""

from convbias.devices import job_gpus, job_threads
from convbias.jobs import log_to, run_reinit, stops_with_one_sentence
from convbias.specs import ExperimentSpec, TrainSpec

log_to(snakemake.log)  # this job's output goes to its rule's log file

# where it computes is not part of what it computes: from the config, not a param (which would rerun)
device = ExperimentSpec.from_config(snakemake.config["experiments"][snakemake.wildcards.experiment]).device
with job_gpus(device), stops_with_one_sentence():  # job_gpus before anything starts CUDA (the loaders do)
    table = run_reinit(TrainSpec.from_dict(snakemake.params.spec), int(snakemake.wildcards.seed), snakemake.input.meta,
                       snakemake.input.run, snakemake.input.test, snakemake.wildcards.experiment,
                       device=device, threads=job_threads(snakemake.threads))
table.to_parquet(snakemake.output[0], index=False)

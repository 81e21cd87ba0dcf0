"""Rule reinit: re-initialization robustness of one run on the test set."""

from convbias.data.dataset import DatasetMeta
from convbias.devices import job_gpus, job_threads
from convbias.harness import log_to, run_made_from, stops_with_one_sentence, write_unless_kept
from convbias.jobs import run_reinit
from convbias.specs import ExperimentSpec, TrainSpec

log_to(snakemake.log)  # this job's output goes to its rule's log file

# where it computes is not part of what it computes: from the config, not a param (which would rerun)
device = ExperimentSpec.from_config(snakemake.config["experiments"][snakemake.wildcards.experiment]).device
inputs, spec, seed = snakemake.input, snakemake.params.spec, int(snakemake.wildcards.seed)
made_from = {"run": run_made_from(inputs.run), "data": DatasetMeta.load(inputs.meta).fingerprint, "spec": spec,
             "experiment": snakemake.wildcards.experiment, "seed": seed,
             "epochs": snakemake.params.epochs}
with job_gpus(device, shares=snakemake.config["runs_per_gpu"]), stops_with_one_sentence():  # job_gpus before anything starts CUDA (the loaders do)
    write_unless_kept(snakemake.output[0], made_from,  # kept when only file times changed: no GPU sweep
                      lambda: run_reinit(TrainSpec.from_dict(spec), seed, inputs.meta, inputs.run, inputs.test,
                                         snakemake.wildcards.experiment, snakemake.params.epochs, device=device,
                                         threads=job_threads(snakemake.threads)))

"""Rule reinit: re-initialization robustness of one run on the test set."""

from convbias.data.dataset import DatasetMeta
from convbias.devices import job_gpus, job_threads
from convbias.harness import log_to, run_made_from, stops_with_one_sentence, write_unless_kept
from convbias.jobs import run_reinit

log_to(snakemake.log)  # this job's output goes to its rule's log file

# the typed spec the rule built (convbias.specs.RunJob): where it computes is not part of what it computes
job, inputs, seed = snakemake.params.spec.typed, snakemake.input, int(snakemake.wildcards.seed)
experiment, epochs = snakemake.wildcards.experiment, snakemake.params.epochs
made_from = {"run": run_made_from(inputs.run), "data": DatasetMeta.load(inputs.meta).fingerprint,
             "spec": snakemake.params.spec, "experiment": experiment, "seed": seed, "epochs": epochs}
device = job.experiment.device
with job_gpus(device, shares=job.runs_per_gpu), stops_with_one_sentence():  # job_gpus before anything starts CUDA (the loaders do)
    write_unless_kept(snakemake.output[0], made_from,  # kept when only file times changed: no GPU sweep
                      lambda: run_reinit(job.experiment.train, seed, inputs.meta, inputs.run, inputs.test, experiment,
                                         epochs, device=device, threads=job_threads(snakemake.threads)))

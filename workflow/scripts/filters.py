"""Rule filters: the filter table of one run, a row per (epoch, layer, filter)."""

from convbias.harness import log_to, run_made_from, stops_with_one_sentence, write_unless_kept
from convbias.jobs import run_filters

log_to(snakemake.log)  # this job's output goes to its rule's log file

run, params, wildcards = snakemake.input.run, snakemake.params, snakemake.wildcards
made_from = {"run": run_made_from(run), "epochs": params.epochs, "include_1x1": params.include_1x1,
             "experiment": wildcards.experiment, "seed": int(wildcards.seed)}
with stops_with_one_sentence():  # kept when only file times changed (a touched or copied run)
    write_unless_kept(snakemake.output[0], made_from,
                      lambda: run_filters(run, params.epochs, params.include_1x1, wildcards.experiment,
                                          int(wildcards.seed)))

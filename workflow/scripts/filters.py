"""Rule filters: the filter table of one run, a row per (epoch, layer, filter)."""

from convbias.jobs import log_to, run_filters, stops_with_one_sentence

log_to(snakemake.log)  # this job's output goes to its rule's log file

with stops_with_one_sentence():
    table = run_filters(snakemake.input.run, snakemake.params.epochs, snakemake.params.include_1x1,
                        snakemake.wildcards.experiment, int(snakemake.wildcards.seed))
table.to_parquet(snakemake.output[0], index=False)

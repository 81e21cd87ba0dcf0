"""Rule measure: n_l, mean cosine and p-value per (seed, epoch, layer) of one experiment."""

from convbias.harness import log_to
from convbias.jobs import measure

log_to(snakemake.log)  # this job's output goes to its rule's log file

measure(snakemake.input).to_parquet(snakemake.output[0], index=False)

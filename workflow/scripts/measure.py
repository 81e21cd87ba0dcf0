"""Rule measure: n_l, mean cosine and p-value per (seed, epoch, layer) of one experiment."""

from convbias.jobs import measure

measure(snakemake.input).to_parquet(snakemake.output[0], index=False)

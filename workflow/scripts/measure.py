"""Rule measure: n_l, mean cosine and p-value per (seed, epoch, layer) of one experiment."""

import pandas as pd

from convbias.stats import summarize

filters = pd.concat([pd.read_parquet(p) for p in snakemake.input], ignore_index=True)
summarize(filters, ["experiment", "seed", "epoch", "layer", "name"]).to_parquet(snakemake.output[0], index=False)

"""Rule stats: one row per (epoch, layer, filter) of one run."""

from pathlib import Path

import pandas as pd

from convbias.checkpoints import load_weights, read_metadata
from convbias.stats import checkpoint_filters

run = Path(snakemake.input.run)
frames = []
for epoch in range(snakemake.params.epochs + 1):
    path = run / f"epoch{epoch:03d}.safetensors"
    table = checkpoint_filters(load_weights(path), read_metadata(path).get("conv_layers"),
                               include_1x1=snakemake.params.include_1x1)
    table.insert(0, "epoch", epoch)
    frames.append(table)
table = pd.concat(frames, ignore_index=True)
table.insert(0, "seed", int(snakemake.wildcards.seed))
table.insert(0, "experiment", snakemake.wildcards.experiment)
table.to_parquet(snakemake.output[0], index=False)

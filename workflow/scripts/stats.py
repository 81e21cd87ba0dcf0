"""Rule stats: one row per (epoch, layer, filter) of one run."""

from pathlib import Path

import pandas as pd

from convbias.checkpoints import load_weights, read_metadata
from convbias.stats import checkpoint_filters

run = Path(snakemake.input.run)
paths = [run / f"epoch{epoch:03d}.safetensors" for epoch in range(snakemake.params.epochs + 1)]
order = read_metadata(paths[0]).get("conv_layers")  # the same layers in every epoch of a run
frames = []
for epoch, path in enumerate(paths):
    table = checkpoint_filters(load_weights(path), order, include_1x1=snakemake.params.include_1x1)
    table.insert(0, "epoch", epoch)
    frames.append(table)
table = pd.concat(frames, ignore_index=True)
table.insert(0, "seed", int(snakemake.wildcards.seed))
table.insert(0, "experiment", snakemake.wildcards.experiment)
table.to_parquet(snakemake.output[0], index=False)

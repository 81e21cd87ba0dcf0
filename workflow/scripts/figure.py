"""Rule figure: draw one figure of the config from its tables."""

from pathlib import Path

import pandas as pd

from convbias import figures

spec = snakemake.params.spec
if spec["kind"] == "measure":
    measure = pd.concat([pd.read_parquet(p) for p in snakemake.input.measure], ignore_index=True)
    history = pd.concat(
        [pd.read_parquet(Path(run) / "history.parquet").assign(
            experiment=Path(run).parent.name, seed=int(Path(run).name.removeprefix("seed")))
         for run in snakemake.input.runs],
        ignore_index=True,
    )
    fig = figures.measure_figure(measure, history, spec.get("panels"), title=", ".join(spec["experiments"]))
elif spec["kind"] == "histograms":
    filters = pd.read_parquet(snakemake.input.stats[0])
    epochs = (int(filters["epoch"].min()), int(filters["epoch"].max()))
    fig = figures.histogram_figure(filters, epochs, title=f"{spec['experiments'][0]}, seed {filters['seed'].iloc[0]}")
elif spec["kind"] in ("layer", "grid"):
    measure = pd.concat([pd.read_parquet(p) for p in snakemake.input.measure], ignore_index=True)
    if spec["kind"] == "layer":
        fig = figures.layer_figure(measure, spec.get("layer", 1))
    else:
        fig = figures.grid_figure(measure, spec["experiments"], spec.get("columns", 2))
elif spec["kind"] == "pretrained":
    filters = pd.read_parquet(snakemake.input.stats[0])
    fig = figures.histogram_figure(filters, (0, 1), labels=("random initialization", "pretrained"),
                                   title=spec["pretrained"])
elif spec["kind"] == "reinit":
    reinit = pd.concat([pd.read_parquet(p) for p in snakemake.input.reinit], ignore_index=True)
    fig = figures.reinit_figure(reinit, title=", ".join(spec["experiments"]))
else:
    raise ValueError(f"unknown figure kind {spec['kind']!r}")
fig.savefig(snakemake.output[0])

"""Per conv layer of one experiment, what the README's ladder section reads: n_l, bias and how often
it is significant, the test-accuracy drop when reset to each sweep source, and how far the layer
moved from its initialization — means over runs — then claim C5's ρ and each run's own ρ.

    python tools/layer_table.py --measure results/measure/ladder_w8_e24.parquet \\
        --reinit results/reinit/ladder_w8_e24/seed*.parquet --runs results/runs/ladder_w8_e24/seed*
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from convbias.checkpoints import load_weights
from convbias.figures import c5_statistics
from convbias.runs import RunFolder
from convbias.stats import relative_distance


def layer_table(measure: pd.DataFrame, reinit: pd.DataFrame, runs: list[str], bias_p: float = 0.01) -> pd.DataFrame:
    """One row per layer: mean final n_l, fraction of runs with p < ``bias_p``, mean |n_l − ½|, mean
    drop per sweep source (``drop_<source>``), mean relative distance of the final weights from epoch 0."""
    final = measure[measure["epoch"] == measure["epoch"].max()]
    table = final.groupby("layer").agg(n_l=("n_l", "mean"), biased=("p_value", lambda p: (p < bias_p).mean()))
    table["bias"] = (final["n_l"] - 0.5).abs().groupby(final["layer"]).mean()
    for source, rows in reinit.groupby("source"):
        table[f"drop_{source}"] = rows.groupby("layer")["drop"].mean()
    distances = []
    for run in map(RunFolder, runs):
        names, last = run.conv_layers(), int(run.history()["epoch"].max())
        start, end = load_weights(run.weights(0)), load_weights(run.weights(last))
        distances.append([relative_distance(end[f"{n}.weight"], start[f"{n}.weight"]) for n in names])
    table["distance"] = np.mean(distances, axis=0)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", required=True, help="the experiment's measure table")
    parser.add_argument("--reinit", nargs="+", required=True, help="its runs' re-initialization tables")
    parser.add_argument("--runs", nargs="+", required=True, help="its run folders")
    args = parser.parse_args(argv)
    measure = pd.read_parquet(args.measure)
    reinit = pd.concat([pd.read_parquet(p) for p in args.reinit], ignore_index=True)
    print(layer_table(measure, reinit, args.runs).round(3).to_string())
    rho, p, per_run = c5_statistics(measure, reinit, reset_epoch=0)
    accuracy = reinit.groupby("seed")["final_accuracy"].first()
    print(f"C5 (reset to epoch 0): rho {rho:.3f}, p {p:.3g}; per run (seed: rho, test accuracy): "
          + ", ".join(f"{s}: {per_run[s]:.2f}, {accuracy[s]:.3f}" for s in per_run.index))
    return 0


if __name__ == "__main__":
    sys.exit(main())

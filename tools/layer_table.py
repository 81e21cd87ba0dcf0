"""Per conv layer of one experiment, what the README's ladder section reads: n_l, how often it is
significant, its bias |n_l − ½| and q (width-free units, convbias.stats.null_quantile), the
test-accuracy drop when reset to each sweep source, and how far the layer moved from its
initialization — means over runs — then claim C5's ρ, its interval over runs and each run's own ρ.

    python tools/layer_table.py --measure results/measure/ladder_w8_e24.parquet \\
        --reinit results/reinit/ladder_w8_e24/seed*.parquet --runs results/runs/ladder_w8_e24/seed*
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from convbias.checkpoints import load_weights
from convbias.claims import bias_and_criticality, c5_statistic
from convbias.runs import RunFolder
from convbias.stats import null_quantile, relative_distance


def layer_table(measure: pd.DataFrame, reinit: pd.DataFrame, runs: list[str], bias_p: float = 0.01) -> pd.DataFrame:
    """One row per layer: mean final n_l, fraction of runs with p < ``bias_p``, mean |n_l − ½|, mean q,
    mean drop per sweep source (``drop_<source>``), mean relative distance of the final weights from epoch 0."""
    final = measure[measure["epoch"] == measure["epoch"].max()]
    table = final.groupby("layer").agg(n_l=("n_l", "mean"), biased=("p_value", lambda p: (p < bias_p).mean()))
    table["bias"] = (final["n_l"] - 0.5).abs().groupby(final["layer"]).mean()
    table["q"] = pd.Series(null_quantile(final["negatives"], final["filters"]), index=final.index).groupby(
        final["layer"]).mean()
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
    points = bias_and_criticality(measure, reinit, reset_epoch=0)
    (c, seeds), (old, _) = c5_statistic(points, 0.95), c5_statistic(points, 0.95, "bias")
    accuracy = reinit.groupby("seed")["final_accuracy"].first()
    print(f"|n_l - 1/2| instead of q: rho {float(old.rho):.3f}, p {float(old.p):.3g}")
    print(f"C5 (q, reset to epoch 0): rho {float(c.rho):.3f}, p {float(c.p):.3g}, 95% interval over runs "
          f"[{float(c.low):.2f}, {float(c.high):.2f}]; per run (seed: rho, test accuracy): "
          + ", ".join(f"{s}: {r:.2f}, {accuracy[s]:.3f}" for s, r in zip(seeds, c.per_run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

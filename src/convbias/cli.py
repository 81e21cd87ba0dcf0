"""``convbias`` commands for use outside the workflow."""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def weights_measure_table(state, filters: pd.DataFrame) -> pd.DataFrame:
    """The measure table (layer, name, filters, kernel, n_l, mean cosine, p-value) of :func:`read_filters`' result."""
    from .stats import measure_table

    table = measure_table(filters, ["layer", "name"])
    table.insert(3, "kernel", ["×".join(map(str, state[f"{n}.weight"].shape[1:])) for n in table["name"]])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convbias", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="the measure table (n_l, mean cosine, p-value) of every conv layer of a weights file")
    stats.add_argument("weights", help="a safetensors file, a torch state dict (loaded with weights_only=True), "
                                        "or torchvision:NAME (ImageNet weights from $TORCH_HOME/hub/checkpoints)")
    stats.add_argument("--include-1x1", action="store_true", help="also count 1×1 convolutions")
    stats.add_argument("--output", help="write the table to this .csv or .parquet file")
    stats.add_argument("--histograms", metavar="PDF", help="draw the cosine histogram of every layer to this file")
    stats.add_argument("--download", action="store_true", help="torchvision:NAME: download missing weights")
    args = parser.parse_args(argv)

    from .checkpoints import WeightsError
    from .pretrained import read_filters

    try:
        state, filters = read_filters(args.weights, args.include_1x1, args.download)
        table = weights_measure_table(state, filters)
    except WeightsError as err:
        print(f"convbias stats: {err}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"convbias stats: {args.weights} has no conv layers (4-d weights)", file=sys.stderr)
        return 2
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.output:
        (table.to_parquet if args.output.endswith(".parquet") else table.to_csv)(args.output, index=False)
    if args.histograms:
        from .figures import cosine_histograms

        cosine_histograms(filters, title=args.weights).savefig(args.histograms)
    return 0


if __name__ == "__main__":
    sys.exit(main())

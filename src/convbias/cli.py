"""``convbias`` commands for use outside the workflow."""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def stats_table(path: str, include_1x1: bool = False) -> pd.DataFrame:
    """Per-layer table (layer, name, filters, kernel, n_l, mean cosine, p-value) of a weights file."""
    from .checkpoints import load_weights, read_metadata
    from .stats import checkpoint_filters, summarize

    state = load_weights(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        order = read_metadata(path).get("conv_layers")
    except Exception:  # not a safetensors file: no stored layer order
        order = None
    filters = checkpoint_filters(state, order, include_1x1=include_1x1)
    table = summarize(filters, ["layer", "name"])
    table.insert(3, "kernel", ["×".join(map(str, state[f"{n}.weight"].shape[1:])) for n in table["name"]])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convbias", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="the projection statistics of every conv layer of a weights file")
    stats.add_argument("weights", help="a safetensors file or a torch state dict (loaded with weights_only=True)")
    stats.add_argument("--include-1x1", action="store_true", help="also count 1×1 convolutions")
    stats.add_argument("--output", help="write the table to this .csv or .parquet file")
    args = parser.parse_args(argv)

    from .checkpoints import WeightsError

    try:
        table = stats_table(args.weights, args.include_1x1)
    except WeightsError as err:
        print(f"convbias stats: {err}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"convbias stats: {args.weights} has no conv layers (4-d weights)", file=sys.stderr)
        return 2
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.output:
        (table.to_parquet if args.output.endswith(".parquet") else table.to_csv)(args.output, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

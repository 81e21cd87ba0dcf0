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
    plan = commands.add_parser("plan", help="disk, memory per job and compute hours of a target, before it runs")
    plan.add_argument("target", nargs="?", default="all",
                      help="all (the paper study), quickstart, cifar (the paper figures trained on CIFAR) or a figure")
    plan.add_argument("--config", default="config/config.yaml", help="the study's config (default: %(default)s)")
    plan.add_argument("--runs", default="results/runs", help="finished runs whose measured speed replaces the benchmarked one")
    args = parser.parse_args(argv)
    if args.command == "plan":
        return print_plan(args.target, args.config, args.runs)

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


def print_plan(target: str, config: str, runs: str) -> int:
    import yaml

    from .config import ConfigError, load_config
    from .plan import datasets_disk, plan

    try:
        study = load_config(yaml.safe_load(open(config)))
        table = plan(study, target, runs)
    except (OSError, ConfigError, ValueError) as err:
        print(f"convbias plan: {err}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"convbias plan: {target} trains nothing")
        return 0
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    gpu = table[table["device"] == "gpu"]
    cpu = table[table["device"] == "cpu"]
    print(f"\n{target}: {table['runs'].sum()} runs; disk {table['disk_gb'].sum():.3g} GB of runs + "
          f"{datasets_disk(study, table['experiment']):.3g} GB of converted datasets; "
          f"largest job {max(table['train_mem_gb'].max(), table['reinit_mem_gb'].max()):.3g} GB of host memory"
          + (f", {gpu['train_gpu_gb'].max():.3g} GB of GPU memory; {gpu['hours'].sum():.3g} GPU-hours" if len(gpu) else "")
          + (f"; {cpu['hours'].sum():.3g} CPU core-hours" if len(cpu) else ""))
    print("hours: measured = from the study's finished runs; calibrated = the CPU rate the quickstart "
          "measured; benchmarked = one H200's rate in the GPU check (bench/gpu_check.py) for this "
          "image size and precision (see convbias.resources)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""convbias commands for use outside the workflow: measure any network, plan and watch the study, verify its runs."""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd


def weights_measure_table(state, filters: pd.DataFrame) -> pd.DataFrame:
    """The measure table (layer, name, filters, kernel, n_l, mean cosine, p-value) of :func:`read_filters`' result."""
    from .stats import measure_table

    table = measure_table(filters, ["layer", "name"])
    table.insert(3, "kernel", ["x".join(map(str, state[f"{n}.weight"].shape[1:])) for n in table["name"]])  # ASCII: CSV
    return table


def build_parser() -> argparse.ArgumentParser:
    """The ``convbias`` command line: its commands and their options."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="convbias", description=__doc__)
    parser.add_argument("--version", action="version", version=f"convbias {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="the measure table (n_l, mean cosine, p-value) of every conv layer of a weights file")
    stats.add_argument("weights", help="a safetensors file, a torch state dict (loaded with weights_only=True), "
                                        "or torchvision:NAME (ImageNet weights from $TORCH_HOME/hub/checkpoints)")
    stats.add_argument("--include-1x1", action="store_true", help="also count 1×1 convolutions")
    stats.add_argument("--output", help="write the table to this .csv or .parquet file")
    stats.add_argument("--histograms", metavar="PDF", help="draw the cosine histogram of every layer to this file")
    stats.add_argument("--download", action="store_true", help="torchvision:NAME: download missing weights")
    stats.add_argument("--init", metavar="WEIGHTS", help="also each layer's relative distance ‖W − W₀‖/‖W₀‖ from "
                                                          "these weights (e.g. the run's epoch 0): how far it moved")
    plan = commands.add_parser("plan", help="disk, memory and time per job, compute hours and wall time of a target, "
                                             "before it runs")
    plan.add_argument("target", nargs="?", default="all",
                      help="all (the paper study), quickstart, smoke, cifar (the paper figures trained on CIFAR) or a figure (fig7 or results/fig7.pdf)")
    plan.add_argument("--config", default="config/config.yaml", help="the study's config (default: %(default)s)")
    plan.add_argument("--runs", default="results/runs", help="finished runs whose measured speed replaces the benchmarked one")
    plan.add_argument("--benchmarks", default="benchmarks",
                      help="Snakemake's benchmark files of the study's jobs, whose wall times replace estimates (default: %(default)s)")
    plan.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                      help="the cores Snakemake is given (--cores): a CPU target's wall time on them (default: this machine's, %(default)s)")
    status = commands.add_parser("status", help="every run of a target: done, running (epoch, accuracy, time left), "
                                               "interrupted, damaged or not started")
    status.add_argument("target", nargs="?", default="all", help="all, quickstart, smoke, cifar or a figure (as for plan)")
    status.add_argument("--config", default="config/config.yaml", help="the study's config (default: %(default)s)")
    for command in (plan, status):
        command.add_argument("--precision", choices=["fp32", "tf32", "bf16"], help="the study-wide precision, as "
                             "snakemake --config precision=… sets it (default: the config's)")
    claims = commands.add_parser("claims", help="score a study's evidence again — the tables its claims job read "
                                                 "(results/evidence/<study>, or a copy such as docs/ladder) — without its runs")
    claims.add_argument("evidence", help="the folder (its experiments.json and <experiment>/*.parquet)")
    claims.add_argument("--config", default="config/config.yaml",
                        help="whose claims section sets the thresholds (default: %(default)s; absent: the defaults)")
    claims.add_argument("--output", help="write the scorecard to this CSV file")
    verify = commands.add_parser("verify", help="check finished runs against their manifests (sizes and checksums)")
    verify.add_argument("runs", nargs="*", help="run folders (default: every results/runs/<experiment>/seed<s>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plan":
        return print_plan(args.target, args.config, args.runs, args.precision, args.benchmarks, args.cores)
    if args.command == "verify":
        return verify_runs(args.runs)
    if args.command == "claims":
        return score_evidence(args.evidence, args.config, args.output)
    if args.command == "status":
        return print_status(args.target, args.config, args.precision)

    from pathlib import Path

    from .checkpoints import WeightsError
    from .pretrained import read_filters
    from .stats import NonFiniteWeights

    for option, value in (("--output", args.output), ("--histograms", args.histograms)):
        if value and not Path(value).resolve().parent.is_dir():
            print(f"convbias stats: the folder of {option} {value} does not exist; create it first", file=sys.stderr)
            return 2
    try:
        state, filters = read_filters(args.weights, args.include_1x1, args.download)
        if filters.empty:
            print(f"convbias stats: {args.weights} has no conv layers (4-d weights"
                  f"{'' if args.include_1x1 else ' with kernels larger than 1×1; --include-1x1 counts those too'})",
                  file=sys.stderr)
            return 2
        table = weights_measure_table(state, filters)
        if args.init:
            table["distance"] = distances_from(state, read_filters(args.init)[0], table["name"], args.init)
    except (WeightsError, NonFiniteWeights) as err:
        print(f"convbias stats: {args.weights}: {err}" if isinstance(err, NonFiniteWeights) else f"convbias stats: {err}",
              file=sys.stderr)
        return 2
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.output:
        (table.to_parquet if args.output.endswith(".parquet") else table.to_csv)(args.output, index=False)
    if args.histograms:
        from .figures import cosine_histograms

        cosine_histograms(filters, title=args.weights).savefig(args.histograms)
    return 0


def score_evidence(folder: str, config: str, output: str | None) -> int:
    """Print the scorecard (its findings, then a line per row and the counts) of an evidence folder."""
    from pathlib import Path

    import yaml

    from .claims import findings, scorecard, summary
    from .evidence import read_evidence
    from .specs import ClaimsSpec

    section = (yaml.safe_load(Path(config).read_text()) or {}).get("claims", {}) if Path(config).is_file() else {}
    try:
        spec = ClaimsSpec.from_config(section)
        evidence = read_evidence(folder)
    except (TypeError, FileNotFoundError) as err:
        print(f"convbias claims: {config}'s claims section: {err}" if isinstance(err, TypeError)
              else f"convbias claims: {err}", file=sys.stderr)
        return 2
    names = {ev.experiment for ev in evidence}
    spec = ClaimsSpec.from_config({**section, "train_accuracy": {e: a for e, a in spec.train_accuracy.items()
                                                                 if e in names}})
    table = scorecard(evidence, spec)
    print("\n".join(findings(table)), end="\n\n")
    print(summary(table))
    if output:
        table.to_csv(output, index=False)
    return 0


def distances_from(state, start, names, start_file: str) -> list[float]:
    """Relative distance of each conv layer ``names``' weight in ``state`` from ``start`` (the weights of ``start_file``)."""
    from .checkpoints import WeightsError
    from .stats import relative_distance

    distances = []
    for name in names:
        key = f"{name}.weight"
        if key not in start or start[key].shape != state[key].shape:
            found = "has no such layer" if key not in start else f"has it as {tuple(start[key].shape)}"
            raise WeightsError(f"--init {start_file} {found}, not {key} of shape {tuple(state[key].shape)}: "
                               f"give the weights of the same network")
        distances.append(relative_distance(state[key], start[key]))
    return distances


def target_table(command: str, target: str, config: str, make, precision: str | None = None):
    """(study, table) of ``make(study)`` for a target of the study in file ``config``, or the exit
    status after saying why there is no table (a bad config or target; nothing trained).
    ``precision``: the config's top-level ``precision`` replaced, as ``snakemake --config`` does."""
    import yaml

    from .config import ConfigError, load_config

    try:
        with open(config) as f:
            entries = yaml.safe_load(f)
    except OSError as err:
        print(f"convbias {command}: cannot read the config {config} ({err.strerror}): run it from the repository's "
              f"root, or give the study's config with --config FILE", file=sys.stderr)
        return 2
    try:
        if precision:
            entries["precision"] = precision
        study = load_config(entries)
        table = make(study)
    except (OSError, ConfigError, ValueError) as err:
        print(f"convbias {command}: {err}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"convbias {command}: {target} trains nothing")
        return 0
    return study, table


def print_status(target: str, config: str, precision: str | None = None) -> int:
    from .status import status

    result = target_table("status", target, config, lambda study: status(study, target), precision)
    if isinstance(result, int):
        return result
    _, table = result
    shown = table.assign(epoch=[f"{e}/{n}" for e, n in zip(table["epoch"], table["epochs"])])
    print(shown.drop(columns=["epochs", "note"]).to_string(index=False, na_rep="–", float_format=lambda v: f"{v:.3g}"))
    for row in table[table["note"] != ""].itertuples():
        print(f"{row.experiment} seed {row.seed}, epoch {row.epoch}/{row.epochs}: {row.note}")
    counts = table["state"].value_counts()
    left = table.loc[table["state"].isin(["running", "interrupted"]), "hours_left"].sum()
    print(f"{target}: {len(table)} runs — " + ", ".join(f"{n} {state}" for state, n in counts.items())
          + (f"; ≈ {left:.2g} hours of training left in the started runs" if left else ""))
    return 0


def verify_runs(paths: list[str]) -> int:
    """Check each finished run (default: all under results/runs) against its manifest; 1 if any is damaged."""
    from pathlib import Path

    from .runs import RunDamaged, RunFolder

    runs = [Path(p) for p in paths] or sorted(Path("results/runs").glob("*/seed*"))
    if not runs:
        print("convbias verify: no runs under results/runs (give run folders as arguments)", file=sys.stderr)
        return 2
    missing = [path for path in runs if not path.is_dir()]
    if missing:
        print(f"convbias verify: {missing[0]} is not a folder{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}: "
              f"give run folders (results/runs/<experiment>/seed<s>), or nothing to check every run", file=sys.stderr)
        return 2
    damaged = 0
    for path in runs:
        try:
            files = RunFolder(path).verify()["files"]
        except RunDamaged as err:
            damaged += 1
            print(f"DAMAGED {err}")
        else:
            print(f"ok      {path} ({len(files)} files, {sum(f['bytes'] for f in files.values()) / 1e6:.1f} MB)")
    print(f"{len(runs) - damaged} of {len(runs)} runs intact")
    return 1 if damaged else 0


def print_plan(target: str, config: str, runs: str, precision: str | None = None, benchmarks: str = "benchmarks",
               cores: int = 1) -> int:
    from .plan import cpu_jobs, datasets_disk, plan, schedule, target_figures, wall_time

    result = target_table("plan", target, config, lambda study: plan(study, target, runs, benchmarks), precision)
    if isinstance(result, int):
        return result
    study, table = result
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    gpu = table[table["device"] == "gpu"]
    cpu = table[table["device"] == "cpu"]
    print(f"\n{target}: {table['runs'].sum()} runs; disk {table['disk_gb'].sum():.3g} GB of runs + "
          f"{datasets_disk(study, table['experiment']):.3g} GB of converted datasets; "
          f"largest job {max(table['train_mem_gb'].max(), table['reinit_mem_gb'].max()):.3g} GB of host memory"
          + (f", {gpu['train_gpu_gb'].max():.3g} GB of GPU memory; {gpu['hours'].sum():.3g} GPU-hours" if len(gpu) else "")
          + (f"; {cpu['hours'].sum():.3g} CPU core-hours" if len(cpu) else ""))
    if len(gpu):
        parts = wall_time(study, table, target, benchmarks)
        where = ("on one GPU, one job at a time" if all(study.experiments[e].gpus == 1 for e in gpu["experiment"])
                 else "one job at a time, each on its GPUs")
        print(f"{target} {where}: ≈ {fmt_seconds(sum(parts.values()))} — converting "
              f"{fmt_seconds(parts['convert'])}, training {fmt_seconds(parts['train'])}, re-initialization sweeps "
              f"{fmt_seconds(parts['sweeps'])}, after the last run (filters, measure, figures) {fmt_seconds(parts['after'])}")
    if len(cpu):
        alone = {e: schedule(cpu_jobs(study, cpu[cpu["experiment"] == e], benchmarks, convert=False), cores)
                 for e in cpu["experiment"]}
        whole = schedule(cpu_jobs(study, cpu, benchmarks, target_figures(study, target)), cores)
        print(f"{target} on {cores} CPU core{'s' * (cores > 1)} (snakemake --cores {cores}): ≈ {fmt_seconds(whole)}; "
              f"each experiment's jobs alone: " + ", ".join(f"{e} {fmt_seconds(t)}" for e, t in alone.items()))
    print("columns: runs = seeds; sweeps = runs with a re-initialization sweep; disk_gb = the experiment's runs on disk; "
          "train_mem_gb, reinit_mem_gb = host memory of one training job, one sweep job; train_gpu_gb = GPU memory of "
          "one training job; job_min, sweep_min, filters_min = minutes of one training job, one sweep, one filters "
          "job; hours = GPU-hours (device gpu: × its GPUs) or CPU core-hours of all its jobs")
    print("rate: measured = from the study's finished runs; calibrated = the CPU rate the quickstart "
          "measured; benchmarked = one H200's rate in the GPU check (bench/gpu_check.py) for this "
          "image size and precision (see convbias.resources). times: measured = the median wall time of the "
          "study's own jobs (benchmarks/), estimated = from the rate")
    return 0


def fmt_seconds(seconds: float) -> str:
    """``seconds`` as a person reads a duration: 40 s, 12 min, 1.9 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h"


if __name__ == "__main__":
    sys.exit(main())

"""Fig 7 through the real DAG, timed per rule, and extrapolated to the paper's 10 runs × 100 epochs.

Runs ``snakemake --cores C --resources gpu=G results/fig7.pdf`` in a scratch copy of this
workflow, with fig 7's experiment (``vgg19_cifar10_step`` of ``config/config.yaml``: VGG19 with the
torchvision head, its init, step schedule, conv snapshots) on a generated CIFAR-10-sized set
(``--images`` training + ``--test-images`` test images, 32×32×3, 10 classes; no download) and
shortened: its runs train ``--epochs`` epochs, and a second experiment, the same but ``--short``
epochs, separates what a training job spends outside its training epochs into a part per job
(start-up, publishing) and a part per epoch (evaluation, the commit the loop waits for).  fig 7 is
drawn from the long runs, so convert, train, filters, measure and figure all run.

Reads each job's wall time from Snakemake's benchmark files and each epoch's training time from
the runs' ``history.parquet``; prints a table per rule and the extrapolation

    convert + N × (per job + E × (training epoch + outside per epoch)) + filters(E) + measure + figure

for N = 10 runs, E = 100 epochs (``--full-seeds``, ``--full-epochs``), one job at a time on one GPU
(the filters of a run are made on the CPU while the next run trains: only the last run's follow
it), beside ``convbias plan``'s estimate of the same (its ratio to the extrapolation: the plan is
meant to be within 25 %).  The same model at the measured size, beside the measured wall time,
checks the model's sum.  ``--json`` writes everything measured.  Usage:
  .venv/bin/python bench/e2e.py --device cuda --precision tf32 [--images 50000 --epochs 6 --short 2 --seeds 2]
  .venv/bin/python bench/e2e.py --device cpu --width 0.0625 --images 512 --test-images 128 --epochs 3 --short 1   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIGURE = "fig7"


def study(args) -> dict:
    """The config: fig 7's experiment on a generated set, long and short, and fig 7 over the long runs."""
    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    figure = dict(shipped["figures"][FIGURE])
    experiment = dict(shipped["experiments"][figure["experiments"][0]])
    experiment.update(dataset="e2e", seeds=list(range(args.seeds)), precision=args.precision, device=args.device,
                      compile={"false": False, "true": True}.get(args.compile, args.compile))
    experiment["model"] = {**experiment["model"], "width": args.width}
    data = {"source": "synthetic", "synthetic": {"n_train": args.images + args.images // 9, "n_test": args.test_images,
                                                 "size": 32, "channels": 3, "num_classes": 10}}
    figure.update(experiments=["long"], caption="fig 7 of the end-to-end benchmark")
    return {"datasets": {"e2e": data}, "runs_per_gpu": args.runs_per_gpu,
            "experiments": {"long": {**experiment, "epochs": args.epochs}, "short": {**experiment, "epochs": args.short}},
            "figures": {FIGURE: figure}}


def checkout(folder: Path, config: dict) -> Path:
    """A copy of this workflow with ``config``, as a user's checkout would be."""
    folder.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / name)
    (folder / "config").mkdir()
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def job_seconds(project: Path, rule: str) -> dict[str, float]:
    """{job: wall seconds} from the rule's Snakemake benchmark files."""
    return {str(p.relative_to(project / "benchmarks" / rule)): float(pd.read_csv(p, sep="\t")["s"].iloc[0])
            for p in sorted((project / "benchmarks" / rule).rglob("*.tsv"))}


def training(project: Path, experiment: str) -> pd.DataFrame:
    """Per run of ``experiment``: job wall time, its epochs' training seconds, and what is left."""
    jobs = job_seconds(project, "train")
    rows = []
    for history_file in sorted((project / "results" / "runs" / experiment).glob("seed*/history.parquet")):
        history = pd.read_parquet(history_file)
        epochs = history[history["epoch"] > 0]["seconds"]
        wall = jobs[f"{experiment}/{history_file.parent.name}.tsv"]
        rows.append({"experiment": experiment, "run": history_file.parent.name, "epochs": len(epochs), "job_s": wall,
                     "first_epoch_s": float(epochs.iloc[0]),
                     "steady_epoch_s": float(epochs.iloc[1:].median()) if len(epochs) > 1 else float(epochs.iloc[0]),
                     "training_s": float(epochs.sum()), "outside_s": wall - float(epochs.sum()),
                     "images_per_s": float(history[history["epoch"] > 1]["images_per_second"].median())
                     if len(epochs) > 1 else float(history["images_per_second"].iloc[-1])})
    return pd.DataFrame(rows)


def extrapolate(runs: pd.DataFrame, rules: dict[str, dict[str, float]], long: int, short: int,
                seeds: int, epochs: int) -> dict:
    """fig 7 at ``seeds`` runs × ``epochs`` epochs from the measured parts (seconds)."""
    out_long = runs[runs.experiment == "long"]["outside_s"].median()
    out_short = runs[runs.experiment == "short"]["outside_s"].median()
    per_epoch = max(0.0, (out_long - out_short) / (long - short))  # evaluation and commits, per epoch
    per_job = out_short - per_epoch * short  # start-up, epoch 0, publishing
    steady = runs[runs.experiment == "long"]["steady_epoch_s"].median()
    first_extra = max(0.0, runs["first_epoch_s"].median() - steady)  # cuDNN's search, FFCV's first pass
    filters = statistics.median(rules["filters"].values()) / (long + 1) * (epochs + 1)  # it reads every epoch
    parts = {
        "convert": sum(rules["convert"].values()),
        "train": seeds * (per_job + first_extra + epochs * (steady + per_epoch)),
        "filters": filters,  # the last run's (the others' overlap training)
        "measure": statistics.median(rules["measure"].values()),
        "figure": statistics.median(rules["figure"].values()),
    }
    return {"per_job_s": per_job, "outside_per_epoch_s": per_epoch, "steady_epoch_s": steady,
            "first_epoch_extra_s": first_extra, "parts_s": parts, "total_s": sum(parts.values())}


def planned(precision: str) -> tuple[list[str], float]:
    """``convbias plan fig7``'s summary lines for the shipped study in ``precision`` (estimated: no
    runs, no benchmark files) and its wall time on one GPU in seconds."""
    import contextlib
    import io

    from convbias.cli import main as convbias
    from convbias.config import load_config
    from convbias.plan import plan, wall_time

    nowhere = str(ROOT / "nowhere")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        convbias(["plan", FIGURE, "--precision", precision, "--config", str(ROOT / "config" / "config.yaml"),
                  "--runs", nowhere, "--benchmarks", nowhere])
    lines = [line for line in out.getvalue().splitlines() if line.startswith(FIGURE)]
    entries = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    study = load_config({**entries, "precision": precision})
    return lines, sum(wall_time(study, plan(study, FIGURE, nowhere, nowhere), FIGURE, nowhere).values())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=45000, help="training images (a tenth more are generated for validation)")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the long runs (fig 7's)")
    parser.add_argument("--short", type=int, default=2, help="epochs of the short runs")
    parser.add_argument("--seeds", type=int, default=2, help="runs of each experiment")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", default="false", choices=["false", "true", "reduce-overhead"],
                        help="the experiment's compile (config/README.md)")
    parser.add_argument("--width", type=float, default=1.0, help="VGG19's width multiplier (1: fig 7's)")
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--gpus", type=int, default=1, help="snakemake --resources gpu=N")
    parser.add_argument("--runs-per-gpu", type=int, default=1, help="the study's runs_per_gpu (one-GPU jobs side by side "
                        "on each GPU; the extrapolation still assumes one at a time)")
    parser.add_argument("--full-seeds", type=int, default=10)
    parser.add_argument("--full-epochs", type=int, default=100)
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temporary one, removed)")
    parser.add_argument("--json", help="write what was measured to this file")
    args = parser.parse_args()
    if not 0 < args.short < args.epochs:
        parser.error("--short must be at least 1 and less than --epochs")
    config = study(args)
    with tempfile.TemporaryDirectory(prefix="convbias-e2e-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        project = checkout(folder / "project", config)
        command = [sys.executable, "-m", "snakemake", f"results/{FIGURE}.pdf",
                   *(f"results/runs/short/seed{s}" for s in range(args.seeds)),
                   "--cores", str(args.cores), "--resources", f"gpu={args.gpus}"]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=project, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"snakemake failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        rules = {rule: job_seconds(project, rule) for rule in ("convert", "train", "filters", "measure", "figure")}
        runs = pd.concat([training(project, "long"), training(project, "short")], ignore_index=True)
        result = extrapolate(runs, rules, args.epochs, args.short, args.full_seeds, args.full_epochs)
        plan_lines, plan_s = planned(args.precision)
        # the model at the measured size: every job one after another, but the filters of all runs but one
        modelled = (sum(sum(jobs.values()) for rule, jobs in rules.items() if rule != "filters")
                    + max(rules["filters"].values()))
    print(f"snakemake results/{FIGURE}.pdf: {wall:.1f} s wall in all, {args.precision}, device {args.device}, "
          f"VGG19 width {args.width}, {args.images} training images")
    print("\nper rule (s per job, from Snakemake's benchmark files):")
    for rule, jobs in rules.items():
        print(f"  {rule:<8} {len(jobs):3d} jobs  min {min(jobs.values()):8.1f}  median {statistics.median(jobs.values()):8.1f}"
              f"  max {max(jobs.values()):8.1f}")
    print("\nper training job:")
    print(runs.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nfig 7 at {args.full_seeds} runs x {args.full_epochs} epochs, one job at a time (s):")
    print(f"  per job {result['per_job_s']:.1f}, per epoch: training {result['steady_epoch_s']:.2f} + outside "
          f"{result['outside_per_epoch_s']:.2f}, first epoch +{result['first_epoch_extra_s']:.1f}")
    for part, seconds in result["parts_s"].items():
        print(f"  {part:<8} {seconds:10.0f}")
    print(f"  total    {result['total_s']:10.0f}  ({result['total_s'] / 60:.1f} min)")
    print(f"\nthe model at the measured size: {modelled:.1f} s of jobs one after another, {wall:.1f} s measured "
          f"({modelled / wall:.2f}x)")
    print(f"\nconvbias plan {FIGURE} --precision {args.precision} (estimated from the benchmarked rate):")
    for line in plan_lines:
        print(f"  {line}")
    print(f"plan / extrapolation: {plan_s / result['total_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "wall_s": wall, "modelled_s": modelled,
                                               "rules": rules, "runs": runs.to_dict("records"), "fig7": result,
                                               "plan_s": plan_s}, indent=1))


if __name__ == "__main__":
    main()

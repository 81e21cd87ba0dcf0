"""``convbias plan``: what a target of the study will cost, before anything runs.

For each experiment a target needs: its runs, the disk its finished runs keep, the memory of
one training and one re-initialization job (host, and GPU where it computes on one), and the
hours of compute (GPU-hours for GPU experiments, CPU core-hours for CPU ones), from
:mod:`convbias.resources`.  Where the study has finished runs of an experiment, their measured
images/s replace the benchmarked or calibrated rate (the ``rate`` column says which).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .config import Study
from .resources import data_size, flops_rate, model_of, reinit_needs, run_bytes, train_needs, train_seconds

CIFAR = ("cifar10", "cifar100")


def target_figures(study: Study, target: str) -> list[str]:
    """The figures behind ``target``: ``all`` (the paper study), another study's name (``quickstart``,
    ``smoke``), ``cifar`` (the paper figures whose experiments all train on CIFAR), or one figure's
    name or file (``fig7`` or ``results/fig7.pdf``)."""
    paper = [n for n, f in study.figures.items() if f.study == "paper"]
    if target == "all":
        return paper
    if target != "paper" and target in {f.study for f in study.figures.values()}:
        return [n for n, f in study.figures.items() if f.study == target]
    if target == "cifar":
        def on_cifar(figure):
            names = study.figures[figure].experiments or ()
            return names and all(study.datasets[study.experiments[e].dataset].source in CIFAR for e in names)
        return [n for n in paper if on_cifar(n)]
    if target in study.figures:
        return [target]
    drawn = target.removeprefix("./").removeprefix("results/").removesuffix(".pdf")  # a figure's file, as Snakemake's target
    if target.endswith(".pdf") and drawn in study.figures:
        return [drawn]
    raise ValueError(f"unknown target {target!r}: use all, quickstart, smoke, cifar or a figure name "
                     f"({', '.join(sorted(study.figures)[:5])}, …)")


def measured_rate(study: Study, experiment: str, runs: Path) -> float | None:
    """Training FLOP/s the study's finished runs of ``experiment`` measured (median over epochs), or None."""
    histories = sorted((runs / experiment).glob("seed*/history.parquet"))
    if not histories:
        return None
    exp = study.experiments[experiment]
    model = model_of(exp, data_size(study.datasets[exp.dataset]))
    rates = pd.concat([pd.read_parquet(p) for p in histories])["images_per_second"]
    rates = rates[rates > 0]
    return float(6 * model.macs * rates.median()) if len(rates) else None


def plan(study: Study, target: str = "all", runs: str | Path = "results/runs") -> pd.DataFrame:
    """One row per experiment of ``target``."""
    figures = [study.figures[n] for n in target_figures(study, target)]
    trained = sorted({e for f in figures for e in f.experiments or ()})
    swept = {}
    for f in figures:
        if f.kind in ("reinit", "critical"):
            for e in f.experiments:
                swept.setdefault(e, set()).update(f.seeds or study.experiments[e].seeds)
    rows = []
    for name in trained:
        exp = study.experiments[name]
        data = data_size(study.datasets[exp.dataset])
        model = model_of(exp, data)
        measured = measured_rate(study, name, Path(runs))
        train, reinit = train_needs(exp, data, measured), reinit_needs(exp, data, measured)
        seeds, sweeps = len(exp.seeds), len(swept.get(name, ()))
        gpu = exp.device != "cpu"
        # GPU-hours; for a CPU experiment the core-hours of its training (one thread per job)
        hours = seeds * train.hours + sweeps * reinit.hours if gpu else seeds * train_seconds(exp, data, measured) / 3600
        rows.append({
            "experiment": name, "dataset": exp.dataset, "runs": seeds, "epochs": exp.train.epochs,
            "snapshots": exp.train.snapshots, "sweeps": sweeps,
            "disk_gb": seeds * run_bytes(exp.train, model) / 1e9,
            "train_mem_gb": train.mem_mb / 1024, "train_gpu_gb": train.device_mb / 1024,
            "reinit_mem_gb": reinit.mem_mb / 1024 if sweeps else 0.0,
            "device": "gpu" if gpu else "cpu", "hours": hours, "rate": flops_rate(exp, data, measured)[1],
        })
    return pd.DataFrame(rows)


def datasets_disk(study: Study, experiments) -> float:
    """GB of the converted datasets ``experiments`` train on."""
    names = {study.experiments[e].dataset for e in experiments}
    return sum((d.train_bytes + d.test_bytes) for d in (data_size(study.datasets[n]) for n in names)) / 1e9

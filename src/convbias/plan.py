"""``convbias plan``: what a target of the study will cost, before anything runs.

For each experiment a target needs: its runs, the disk its finished runs keep, the memory of
one training and one re-initialization job (host, and GPU where it computes on one), the wall
time of one training, re-initialization and filters job, and the hours of compute (GPU-hours for
GPU experiments, CPU core-hours for CPU ones), from :mod:`convbias.resources`; and, for a target
that trains on a GPU, its wall time on one GPU running one job at a time (:func:`wall_time`).

Measured beats estimated: a job's time is the median wall time Snakemake's benchmark files
(``benchmarks/<rule>/…``) recorded for the study's own jobs of the experiment, where there are
any (a training job's only if it trained the run of the current spec from epoch 0); else it is
estimated from a compute rate — the images/s the study's finished runs of the current spec
measured, else the benchmarked or calibrated one (the ``rate`` column says which, ``times``
whether the jobs were measured).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pandas as pd

from .config import Study
from .resources import (TABLE_SECONDS, convert_seconds, data_size, filters_seconds, flops_rate, model_of, reinit_needs,
                        reinit_seconds, run_bytes, train_job_seconds, train_needs)

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
    import difflib

    studies = sorted({f.study for f in study.figures.values()} - {"paper"})
    paper_figures = sorted((n for n in paper if re.fullmatch(r"fig\d+", n)), key=lambda n: int(n[3:]))
    targets = ["all", *studies, "cifar", *study.figures]
    close = difflib.get_close_matches(drawn, targets, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"unknown target {target!r}: {hint}use all, {', '.join(studies)}, cifar or a figure: "
                     f"{', '.join(paper_figures[:3])} … {paper_figures[-1] if paper_figures else ''} (the paper's, "
                     f"{len(paper_figures)} in all), or another figure name of the config (its figures section)")


def finished_runs(study: Study, experiment: str, runs: Path) -> list[Path]:
    """The study's finished runs of ``experiment`` trained with its current spec (not, say, in
    another precision): their folders."""
    spec = study.experiments[experiment].train.to_dict()
    found = []
    for manifest in sorted((runs / experiment).glob("seed*/manifest.json")):
        try:
            if json.loads(manifest.read_text()).get("spec") == spec:
                found.append(manifest.parent)
        except (OSError, ValueError):
            pass
    return found


def measured_rate(study: Study, experiment: str, finished: list[Path]) -> float | None:
    """Training FLOP/s the ``finished`` runs of ``experiment`` (:func:`finished_runs`) measured
    (median over epochs), or None."""
    histories = [run / "history.parquet" for run in finished]
    if not histories:
        return None
    exp = study.experiments[experiment]
    model = model_of(exp, data_size(study.datasets[exp.dataset]))
    rates = pd.concat([pd.read_parquet(p) for p in histories])["images_per_second"]
    rates = rates[rates > 0]
    return float(6 * model.macs * rates.median()) if len(rates) else None


def benchmarked(files) -> float | None:
    """The median wall seconds (column ``s``) of Snakemake benchmark ``files``, or None if there are none."""
    walls = []
    for file in files:
        try:
            walls.append(float(pd.read_csv(file, sep="\t")["s"].iloc[0]))
        except (OSError, ValueError, KeyError, IndexError, pd.errors.ParserError):
            pass
    return statistics.median(walls) if walls else None


def measured_job(experiment: str, finished: list[Path], benchmarks: Path) -> float | None:
    """Median wall seconds of the training jobs that trained the ``finished`` runs of
    ``experiment`` from epoch 0 (a job that resumed, or found its run published, took less)."""
    files = []
    for run in finished:
        bench = benchmarks / "train" / experiment / f"{run.name}.tsv"
        wall = benchmarked([bench])
        if wall is not None and wall >= pd.read_parquet(run / "history.parquet")["seconds"].sum():
            files.append(bench)
    return benchmarked(files)


def plan(study: Study, target: str = "all", runs: str | Path = "results/runs",
         benchmarks: str | Path = "benchmarks") -> pd.DataFrame:
    """One row per experiment of ``target``."""
    runs, benchmarks = Path(runs), Path(benchmarks)
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
        finished = finished_runs(study, name, runs)  # of the current spec
        measured = measured_rate(study, name, finished)
        train, reinit = train_needs(exp, data, measured), reinit_needs(exp, data, measured)
        seeds, sweeps = len(exp.seeds), len(swept.get(name, ()))
        gpu = exp.device != "cpu"
        job = measured_job(name, finished, benchmarks)
        sweep = benchmarked([benchmarks / "reinit" / name / f"{run.name}.tsv" for run in finished])
        filters = benchmarked([benchmarks / "filters" / name / f"{run.name}.tsv" for run in finished])
        times = "measured" if job else "estimated"
        job = job or train_job_seconds(exp, data, measured)
        sweep = sweep or reinit_seconds(exp, data, measured)
        filters = filters or filters_seconds(exp, data)
        # GPU-hours (each of a job's GPUs); for a CPU experiment core-hours (one thread per job)
        hours = (seeds * job * (exp.gpus if gpu else 1) + sweeps * sweep) / 3600
        rows.append({
            "experiment": name, "dataset": exp.dataset, "runs": seeds, "epochs": exp.train.epochs,
            "snapshots": exp.train.snapshots, "sweeps": sweeps,
            "disk_gb": seeds * run_bytes(exp.train, model) / 1e9,
            "train_mem_gb": train.mem_mb / 1024, "train_gpu_gb": train.device_mb / 1024,
            "reinit_mem_gb": reinit.mem_mb / 1024 if sweeps else 0.0,
            "device": "gpu" if gpu else "cpu", "job_min": job / 60, "sweep_min": sweep / 60 if sweeps else 0.0,
            "filters_min": filters / 60, "hours": hours, "rate": flops_rate(exp, data, measured)[1], "times": times,
        })
    return pd.DataFrame(rows)


def wall_time(study: Study, table: pd.DataFrame, target: str, benchmarks: str | Path = "benchmarks") -> dict:
    """Seconds ``target`` takes running one job at a time (on one GPU; a data-parallel job on
    its GPUs), by part: converting its
    datasets; its training jobs and re-initialization sweeps one after another (GPU experiments);
    then what follows the last run — its filters table, the measure tables and the figures (the
    filters of earlier runs are made on the CPU while later runs train)."""
    benchmarks = Path(benchmarks)
    datasets = sorted({study.experiments[e].dataset for e in table["experiment"]})
    convert = sum(benchmarked([benchmarks / "convert" / f"{d}.tsv"]) or convert_seconds(study.datasets[d])
                  for d in datasets)
    gpu = table[table["device"] == "gpu"]
    figures = target_figures(study, target)
    measure = max((benchmarked([benchmarks / "measure" / f"{e}.tsv"]) or TABLE_SECONDS
                   for e in table["experiment"]), default=0.0)
    drawn = max((benchmarked([benchmarks / "figure" / f"{f}.tsv"]) or TABLE_SECONDS for f in figures), default=0.0)
    return {"convert": convert, "train": float((gpu["runs"] * gpu["job_min"] * 60).sum()),
            "sweeps": float((gpu["sweeps"] * gpu["sweep_min"] * 60).sum()),
            "after": float(gpu["filters_min"].max() * 60 if len(gpu) else 0.0) + measure + drawn}


def schedule(jobs: list[tuple[str, float, tuple[str, ...]]], cores: int) -> float:
    """Seconds until the last of ``jobs`` — (name, seconds, names of the jobs it waits for) — ends
    on ``cores`` cores, one job per core: each job starts as soon as a core is free and every job it
    waits for has ended, in the order given when several could (Snakemake starts training jobs
    first: most jobs wait on them)."""
    import heapq

    ended, running, pending, now = {}, [], list(jobs), 0.0
    while pending or running:
        for job in [j for j in pending if all(d in ended for d in j[2])]:
            if len(running) == cores:
                break
            heapq.heappush(running, (now + job[1], job[0]))
            pending.remove(job)
        if not running:
            raise ValueError(f"jobs wait for jobs that are not listed: {sorted(set(pending[0][2]) - set(ended))}")
        now, name = heapq.heappop(running)
        ended[name] = now
    return now


def cpu_jobs(study: Study, table: pd.DataFrame, benchmarks: str | Path = "benchmarks",
             figures: list[str] = (), convert: bool = True) -> list[tuple[str, float, tuple[str, ...]]]:
    """The jobs of the CPU experiments of ``table`` (a :func:`plan`) for :func:`schedule`: each dataset's
    conversion (if ``convert``), each run's training, re-initialization sweep and filters, each
    experiment's measure table, then ``figures`` and the scorecard, which wait for all of them."""
    benchmarks = Path(benchmarks)
    rows = table[table["device"] == "cpu"]
    jobs = []
    datasets = sorted(set(rows["dataset"])) if convert else []
    for d in datasets:
        jobs.append((f"convert {d}", benchmarked([benchmarks / "convert" / f"{d}.tsv"]) or
                     convert_seconds(study.datasets[d]), ()))
    trains, later = [], []
    for r in rows.itertuples():
        seeds = study.experiments[r.experiment].seeds
        needs = (f"convert {r.dataset}",) if convert else ()
        for i, seed in enumerate(seeds):
            run = f"{r.experiment} seed {seed}"
            trains.append((f"train {run}", r.job_min * 60, needs))
            if i < r.sweeps:
                later.append((f"reinit {run}", r.sweep_min * 60, (f"train {run}",)))
            later.append((f"filters {run}", r.filters_min * 60, (f"train {run}",)))
        measure = benchmarked([benchmarks / "measure" / f"{r.experiment}.tsv"]) or TABLE_SECONDS
        later.append((f"measure {r.experiment}", measure, tuple(f"filters {r.experiment} seed {s}" for s in seeds)))
    tables = tuple(name for name, _, _ in trains + later)
    drawn = [(f"figure {f}", benchmarked([benchmarks / "figure" / f"{f}.tsv"]) or TABLE_SECONDS, tables)
             for f in figures]
    return jobs + trains + later + drawn + ([("claims", TABLE_SECONDS, tables)] if figures else [])


def datasets_disk(study: Study, experiments) -> float:
    """GB of the converted datasets ``experiments`` train on."""
    names = {study.experiments[e].dataset for e in experiments}
    return sum((d.train_bytes + d.test_bytes) for d in (data_size(study.datasets[n]) for n in names)) / 1e9

"""The workflow end to end on a tiny dataset the test writes in the real IDX format."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import make_idx_dataset

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
EXPERIMENTS = {
    "tiny_lenet": {"model": {"arch": "lenet", "width": 0.5, "hidden": 16, "dropout": 0.0}},
    "tiny_vgg": {"model": {"arch": "vgg11", "width": 0.0625, "hidden": 16, "dropout": 0.0}},
}

pytestmark = pytest.mark.workflow


def tiny_config(data: Path) -> dict:
    figures = {}
    for exp in EXPERIMENTS:
        for kind in ("measure", "histograms", "reinit", "critical"):
            figures[f"quickstart/{exp}_{kind}"] = {"kind": kind, "study": "quickstart", "experiments": [exp],
                                                   "caption": f"{kind} of {exp}"}
    return {
        "datasets": {"tiny": {"source": "mnist", "path": str(data), "pad": 2, "hflip": False}},
        "experiments": {name: {"dataset": "tiny", "epochs": 2, "seeds": [0, 1], "device": "cpu",
                               "optimizer": {"batch_size": 64}, **exp} for name, exp in EXPERIMENTS.items()},
        "figures": figures,
    }


def write_config(root: Path, config: dict) -> None:
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, *args], cwd=root, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    counts, table = {}, output.split("Job stats:", 1)
    if len(table) < 2:
        return counts
    for line in table[1].splitlines():
        match = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(\d+)\s*", line)
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
        elif match:
            break
    return counts


def checkout(root: Path, config: dict) -> Path:
    """A copy of the workflow with ``config``, as a user's checkout would be."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    write_config(root, config)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="module")
def project(tmp_path_factory, data) -> Path:
    """A checkout of the tiny study run to the end (``snakemake --cores 2 quickstart``), once per module:
    each test that looks at the finished study, or at what a change to it reruns, passes alone,
    whichever tests ran before it."""
    root = checkout(tmp_path_factory.mktemp("project"), tiny_config(data))
    snakemake(root, "--cores", "2", "quickstart")
    return root


def test_dry_run_shows_the_whole_dag(data, tmp_path):
    fresh = checkout(tmp_path / "project", tiny_config(data))  # nothing run yet, whatever ran before
    counts = job_counts(snakemake(fresh, "-n", "quickstart").stdout)
    assert counts == {"convert": 1, "train": 4, "filters": 4, "measure": 2, "reinit": 4, "figure": 8,
                      "claims_quickstart": 1, "quickstart": 1}


def test_full_run_makes_every_target_and_a_second_run_is_a_no_op(project):
    """What `snakemake --cores 2 quickstart` (run by the fixture ``project``) made, and that it is done."""
    for exp in EXPERIMENTS:
        for kind in ("measure", "histograms", "reinit", "critical"):
            pdf = project / "results" / "quickstart" / f"{exp}_{kind}.pdf"
            assert pdf.read_bytes().startswith(b"%PDF"), pdf
        for seed in (0, 1):
            run = project / "results" / "runs" / exp / f"seed{seed}"
            assert {p.name for p in run.iterdir() if not p.name.startswith(".")} == {
                "epoch000.safetensors", "epoch001.safetensors", "epoch002.safetensors", "history.parquet", "manifest.json"}
    import pandas as pd

    measure = pd.read_parquet(project / "results" / "measure" / "tiny_lenet.parquet")
    assert len(measure) == 2 * 3 * 6  # seeds × epochs × conv layers
    assert {"n_l", "mean_cosine", "p_value"} <= set(measure.columns)
    reinit = pd.read_parquet(project / "results" / "reinit" / "tiny_vgg" / "seed1.parquet")
    assert len(reinit) == 4 * 8 and set(reinit["source"]) == {"rand", "0", "1", "2"}
    check_tables_against_the_weight_files(project, "tiny_lenet")
    from convbias.cli import main

    claims = pd.read_csv(project / "results" / "quickstart" / "claims.csv")
    assert set(claims["experiment"]) == set(EXPERIMENTS) and {"C0", "C1", "C6"} <= set(claims["claim"])
    assert set(claims["result"]) <= {"holds", "fails", "inconclusive", "not run", "not applicable"}
    judged = claims[claims["result"] != "not applicable"]
    assert judged["value"].notna().all() and (claims["claim"] == "C0").sum() == len(EXPERIMENTS)
    # the tables the scorecard read, beside it: scored again without the runs, the same verdicts
    assert main(["claims", str(project / "results" / "evidence" / "quickstart"), "--config",
                 str(project / "config" / "config.yaml"), "--output", str(project / "rescored.csv")]) == 0
    assert pd.read_csv(project / "rescored.csv")[["claim", "experiment", "result"]].equals(
        claims[["claim", "experiment", "result"]])
    resume = project / "results" / "resume"
    assert not resume.exists() or list(resume.iterdir()) == []  # no work folder, lock file or empty folder left

    runs = [str(p) for p in sorted((project / "results" / "runs").glob("*/seed*"))]
    assert len(runs) == 4 and main(["verify", *runs]) == 0

    # every job's output in its rule's log; one readable line per epoch, no progress bars in a file
    logs = project / "logs"
    for rule in ("convert", "train", "filters", "measure", "reinit", "figure", "claims"):
        assert list((logs / rule).rglob("*.log")), rule
    train_log = (logs / "train" / "tiny_lenet" / "seed0.log").read_text()
    assert re.findall(r"tiny_lenet seed 0 epoch (\d)/2: lr [\d.e-]+, train loss [\d.]+ acc [\d.]+, val acc [\d.]+, "
                      r"\d+ img/s, [\d.]+ s; \d+ h \d\d min left", train_log) == ["1", "2"], train_log[-2000:]
    assert "batch/s" not in train_log and "epoch/s" not in train_log
    for rule in ("convert", "train", "reinit"):
        assert list((project / "benchmarks" / rule).rglob("*.tsv")), rule

    again = snakemake(project, "-n", "quickstart")
    assert "Nothing to be done" in again.stdout + again.stderr
    snakemake(project, "--report", "report.html", "quickstart")
    assert "lenet_measure" in (project / "report.html").read_text(errors="ignore")


def check_tables_against_the_weight_files(project: Path, experiment: str) -> None:
    """Every table the workflow wrote, recomputed here from the run folders with numpy and scipy."""
    import numpy as np
    from safetensors.numpy import load_file
    from scipy.stats import binomtest

    measure = pd.read_parquet(project / "results" / "measure" / f"{experiment}.parquet")
    for seed in (0, 1):
        stats = pd.read_parquet(project / "results" / "filters" / experiment / f"seed{seed}.parquet")
        for epoch in range(3):
            weights = load_file(project / "results" / "runs" / experiment / f"seed{seed}" / f"epoch{epoch:03d}.safetensors")
            convs = sorted((k for k, v in weights.items() if v.ndim == 4), key=lambda k: int(k.split(".")[1]))
            assert len(convs) == 6
            for layer, key in enumerate(convs, start=1):
                rows = weights[key].reshape(len(weights[key]), -1).astype(np.float64)
                cosines = rows.sum(1) / (np.linalg.norm(rows, axis=1) * np.sqrt(rows.shape[1]))
                got = stats[(stats.epoch == epoch) & (stats.layer == layer)].sort_values("filter")
                assert np.allclose(got["cosine"], cosines), (seed, epoch, layer)
                row = measure[(measure.seed == seed) & (measure.epoch == epoch) & (measure.layer == layer)]
                negatives = int((cosines <= 0).sum())
                assert row["n_l"].item() == pytest.approx(negatives / len(cosines))
                assert row["p_value"].item() == pytest.approx(binomtest(negatives, len(cosines), 0.5).pvalue)
        # the learnt weights change from epoch to epoch, so equal tables would mean one epoch read twice
        assert not np.allclose(*(stats[stats.epoch == e].sort_values(["layer", "filter"])["cosine"] for e in (0, 2)))
        # re-initializing from a fresh random draw is not re-initializing from epoch 0
        reinit = pd.read_parquet(project / "results" / "reinit" / experiment / f"seed{seed}.parquet")
        by_source = reinit.set_index(["source", "layer"])["accuracy"]
        assert not np.array_equal(by_source["rand"].sort_index(), by_source["0"].sort_index())
        assert (by_source["2"] == reinit["final_accuracy"].iloc[0]).all()  # the final weights change nothing


def test_layer_and_grid_figures_from_finished_runs(project, data):
    """Figure kinds layer (fig 21) and grid (fig 22) drawn by the workflow from the runs above."""
    config = tiny_config(data)
    both = list(EXPERIMENTS)
    config["figures"].update({"layer": {"kind": "layer", "experiments": both, "caption": "first layers"},
                              "grid": {"kind": "grid", "experiments": both, "columns": 1, "caption": "grid"}})
    write_config(project, config)
    try:
        proc = snakemake(project, "--cores", "1", "results/layer.pdf", "results/grid.pdf")
    finally:
        write_config(project, tiny_config(data))
    out = proc.stdout + proc.stderr
    assert out.count("rule figure:") == 2 and "rule train:" not in out  # only the two figure jobs
    for name in ("layer", "grid"):
        assert (project / "results" / f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_learning_rate_change_reruns_only_that_experiment(project, data):
    config = tiny_config(data)
    config["experiments"]["tiny_vgg"]["optimizer"]["lr"] = 0.02
    write_config(project, config)
    try:
        out = snakemake(project, "-n", "quickstart").stdout
    finally:
        write_config(project, tiny_config(data))
    assert job_counts(out) == {"train": 2, "filters": 2, "measure": 1, "reinit": 2, "figure": 4, "claims_quickstart": 1,
                               "quickstart": 1}
    wildcards = re.findall(r"wildcards: (.*)", out)
    assert len(wildcards) == 2 + 2 + 1 + 2 + 4
    assert all("tiny_vgg" in w and "tiny_lenet" not in w for w in wildcards), wildcards
    restored = snakemake(project, "-n", "quickstart")
    assert "Nothing to be done" in restored.stdout + restored.stderr


def test_changing_where_runs_compute_reschedules_nothing(project, data):
    """What says where and how a job computes, not what it computes, reaches the jobs in their typed
    spec without being recorded (convbias.params): device auto instead of cpu, two GPUs per run, two
    runs per GPU, no page cache, other resume points and stall warnings, a mirror: nothing reruns."""
    config = tiny_config(data)
    for exp in config["experiments"].values():
        exp.update(device="auto", gpus=2, resume_every=3600, stall_epochs=1)
    config["datasets"]["tiny"]["os_cache"] = False
    config.update(runs_per_gpu=2, mirrors={"mnist": {"url": "http://127.0.0.1:9/mnist/"}})
    write_config(project, config)
    try:
        out = snakemake(project, "-n", "quickstart")
    finally:
        write_config(project, tiny_config(data))
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-2000:]


def test_moving_the_files_reschedules_nothing_and_new_label_noise_retrains(project, data, tmp_path):
    moved = shutil.copytree(data, tmp_path / "moved")
    config = tiny_config(data)
    config["datasets"]["tiny"].update(path=str(moved), download=True)
    write_config(project, config)
    try:
        out = snakemake(project, "-n", "quickstart")
        assert "Nothing to be done" in out.stdout + out.stderr
        config["datasets"]["tiny"]["label_noise"] = 0.5
        write_config(project, config)
        counts = job_counts(snakemake(project, "-n", "quickstart").stdout)
    finally:
        write_config(project, tiny_config(data))
    assert counts["convert"] == 1 and counts["train"] == 4


def test_file_times_alone_retrain_nothing(project, data, tmp_path):
    """The finished study, moved as people move studies. A touched script (a `git pull`), or
    results/ copied keeping file times (`cp -a`) into a fresh checkout, whose scripts are newer:
    nothing reruns. results/ copied with new times (`cp -r`: the data may be newer than the runs),
    or touched runs: Snakemake reruns jobs by file times, and every training job finds its run
    published and intact and trains nothing, every filters and reinit job finds its table made
    from the same run and keeps it, not a file rewritten; `snakemake --touch` makes the study up
    to date without running anything (the README's recipe)."""
    import time

    def nothing_to_do(root):
        out = snakemake(root, "-n", "quickstart")
        assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]

    clone = checkout(tmp_path / "cp-a", tiny_config(data))
    shutil.copytree(project / "results", clone / "results", copy_function=shutil.copy2)
    nothing_to_do(clone)
    moved = shutil.copytree(project, tmp_path / "moved", symlinks=True)  # with Snakemake's records
    (moved / "workflow" / "scripts" / "train.py").touch()
    nothing_to_do(moved)
    for path in (moved / "results" / "runs").rglob("*"):
        path.touch()
    clone = checkout(tmp_path / "cp-r", tiny_config(data))
    shutil.copytree(project / "results", clone / "results", copy_function=shutil.copy)
    for root in (clone, moved):
        runs = sorted((root / "results" / "runs").glob("*/seed*"))
        files = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for run in runs for p in run.glob("epoch*")}
        tables = sorted((root / "results").glob("[fr]*/*/seed*.parquet"))  # filters/ and reinit/
        assert len(tables) == 2 * len(runs)
        contents = {p: (p.stat().st_ino, p.read_bytes()) for p in tables}
        start = time.time()
        snakemake(root, "--cores", "2", *(str(p.relative_to(root)) for p in tables))
        assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == files
        assert {p: (p.stat().st_ino, p.read_bytes()) for p in tables} == contents
        for rule, said in (("train", "published and intact"), ("filters", "kept, nothing recomputed"),
                           ("reinit", "kept, nothing recomputed")):
            logs = [log for log in (root / "logs" / rule).rglob("*.log") if log.stat().st_mtime > start]
            assert root != moved or rule == "train" or len(logs) == len(runs), rule  # touched runs: all rescheduled
            for log in logs:  # a job that ran computed nothing
                text = log.read_text()
                assert said in text and " epoch 1/" not in text, text[-2000:]
        assert "Nothing to be done" in snakemake(root, "-n", *(str(p.relative_to(root)) for p in tables)).stdout
        snakemake(root, "--touch", "quickstart")
        nothing_to_do(root)


def browser_dom(url: str) -> str:
    """The DOM of ``url`` after a headless Chromium (Debian's package; `make test` installs it) ran its scripts."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is not installed: `make test` installs it (Debian package chromium)"
    out = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


# Appended to a report: once its scripts have drawn the landing page, records on <body> what every
# <code> shows before and after itself (CSS ::before/::after content: "none" where nothing).
PROBE = """<script>setTimeout(() => document.body.setAttribute("data-code-marks", [...document.querySelectorAll("code")]
  .flatMap(c => ["::before", "::after"].map(p => getComputedStyle(c, p).content)).join("|")), 4000)</script>"""


def test_the_report_opens_on_what_was_studied_with_the_scorecard_runs_and_figures(project):
    """`make report` on a finished study: in a real browser the report's landing page says what
    was studied and how to read it and draws the study's scorecard and runs tables, and no caption
    became a docutils error; the scorecard and runs pages, opened on their own, show the same rows."""
    report = project / "results" / "quickstart" / "report.html"
    snakemake(project, "--report", str(report.relative_to(project)), "quickstart")
    dom = re.sub(r"<script\b.*?</script>", "", browser_dom(report.as_uri()), flags=re.S)  # what was drawn, not its data
    assert "What this report shows" in dom and "What was found" in dom, dom[-3000:]
    assert "What study quickstart found" in dom and "<b>C0</b>, every run learned" in dom  # a sentence per claim
    assert "System Message" not in dom and "Undefined substitution" not in dom
    table = pd.read_csv(project / "results" / "quickstart" / "claims.csv")
    drawn = dom[dom.index("Claims scorecard of study quickstart"):dom.index("How to read the rest")]
    assert "Runs of study quickstart" in drawn and drawn.count("<tr>") == len(table) + 1 + 1 + 2 * len(EXPERIMENTS)
    assert all(result in drawn for result in table["result"]), drawn
    embedded = report.read_text()
    for page in ("scorecard", "runs"):
        assert f"report/quickstart/{page}.html" in embedded, page
    # the claims job's parameters, in the report's narrow column: words that wrap, not file paths
    params = re.search(r'"rule": "claims_quickstart", "wildcards": "", "params": "([^"]*)"', embedded).group(1)
    assert "tiny_vgg: 2 runs, 2 sweeps, learning expected: generalize" in params and "results/" not in params, params
    # code in the landing page's text and tables shows as code, without the backticks that the
    # report's prose style draws around a <code> (measured in the browser, after its scripts ran)
    probe = report.with_name("probe.html")
    probe.write_text(embedded + PROBE)
    marks = re.search(r'data-code-marks="([^"]*)"', browser_dom(probe.as_uri())).group(1)
    assert marks and set(marks.split("|")) <= {"none", "normal"}, marks
    scorecard = browser_dom((project / "results" / "report" / "quickstart" / "scorecard.html").as_uri())
    assert "Claims scorecard of study quickstart" in scorecard and scorecard.count("<tr>") == len(table) + 1
    runs = browser_dom((project / "results" / "report" / "quickstart" / "runs.html").as_uri())
    assert runs.count("<tr>") == 1 + 2 * len(EXPERIMENTS), runs[-2000:]  # the header, two seeds per experiment

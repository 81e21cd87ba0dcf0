"""What ``snakemake --report`` shows beside the figures: the claims scorecard and the runs of a
study as HTML tables (the report shows an HTML result in its viewer; a CSV it only offers to
download), and the escaping that keeps captions from being read as reStructuredText markup."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .claims import RESULT_COLOURS
from .runs import RunFolder

# Inline styles only (no <style> element): each page is also drawn inside the report's landing
# page (workflow/report/workflow.rst includes it), where a stylesheet would restyle the report.
PAGE = "font-family:sans-serif;font-size:13px;overflow-x:auto;margin-bottom:16px"
CELL = "border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top"
HEAD_CELL = CELL + ";background:#eee"
CAPTION = "text-align:left;font-weight:bold;padding:4px 0"
RST_SPECIAL = "\\|*`_"  # markup characters of reStructuredText inline text (``|x|``: a substitution)


def rst_escape(text: str) -> str:
    """``text`` as reStructuredText that shows it as it is (``|n_l − ½|`` would be a substitution)."""
    return "".join("\\" + c if c in RST_SPECIAL else c for c in str(text))


def page(title: str, body: str) -> str:
    """A small HTML page, shown by the report on its own and drawn inside its landing page: no
    ``<html>``, ``<head>`` or ``<body>`` tags (HTML5 implies them; inside another page they would
    be out of place) and no stylesheet.  The landing page sets its text in Tailwind's ``prose``
    style, which draws a backtick before and after every ``<code>``: the page opts out of it
    (``not-prose``), so it looks the same there as on its own."""
    return (f"<!DOCTYPE html>\n<meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            f"<div class=\"not-prose\" style=\"{PAGE}\">{body}</div>\n")


def table_html(table: pd.DataFrame, caption: str, colours: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """``table`` as an HTML table; ``colours``: column → value → background colour of its cells."""
    colours = colours or {}
    head = "".join(f'<th style="{HEAD_CELL}">{html.escape(str(c))}</th>' for c in table.columns)
    rows = []
    for row in table.itertuples(index=False):
        cells = []
        for column, value in zip(table.columns, row):
            shown = "" if value is None or (isinstance(value, float) and pd.isna(value)) else (
                f"{value:.4g}" if isinstance(value, float) else str(value))
            colour = colours.get(column, {}).get(str(value))
            style = CELL + (f";background:{colour}" if colour else "")
            cells.append(f'<td style="{style}">{html.escape(shown)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table style="border-collapse:collapse"><caption style="{CAPTION}">{html.escape(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def scorecard_html(table: pd.DataFrame, study: str) -> str:
    """The claims scorecard (:func:`convbias.claims.scorecard`) as a page: what was found, a sentence
    per claim (:func:`convbias.claims.findings`), then a row per (claim, experiment), its result
    coloured (holds green, fails red, inconclusive amber, not applicable grey)."""
    from .claims import findings

    counts = table["result"].value_counts()
    said = ", ".join(f"{counts[r]} {r}" for r in RESULT_COLOURS if r in counts)
    caption = f"Claims scorecard of study {study}: {said}"
    items = []
    for sentence in findings(table):
        claim, rest = sentence.split(", ", 1)
        items.append(f"<li style=\"margin:2px 0\"><b>{html.escape(claim)}</b>, {html.escape(rest)}</li>")
    found = (f"<p><b>What study {html.escape(study)} found</b>, claim by claim (from its scorecard):</p>"
             f"<ul style=\"list-style:disc;padding-left:1.5em;margin:4px 0 10px\">{''.join(items)}</ul>")
    legend = ("<p>One row per claim and experiment: the statistic, its threshold, the value, its interval over runs "
              "(low, high: the bootstrap over seeds), each run's own value, and whether the claim holds, fails or is "
              "inconclusive (the study is too small to tell: the detail says why). C0 asks whether the runs "
              "learned; the claims that presuppose learning are judged only on runs that did. Claims, thresholds "
              "and the rules for inconclusive: <code>config/README.md</code>, section <code>claims</code>.</p>")
    return page(caption, found + table_html(table, caption, {"result": RESULT_COLOURS}) + legend)


VERSIONS = ("convbias", "torch", "torchvision", "ffcv", "numpy")  # as a run's manifest records them
RUN_COLUMNS = ["experiment", "seed", "dataset", "epochs", "train_loss", "train_acc", "val_acc", "test_acc", "precision",
               "device", "processes", "s_per_epoch", *VERSIONS, "commit", "note"]


def runs_table(runs: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per finished run of ``runs`` (experiment → seed → run folder): its dataset, its last
    epoch's losses and accuracies (validation and test), and from its manifest how and where it was
    computed (precision, the device's model — a GPU's, or the CPU's —, processes, seconds per
    epoch, the versions of convbias, torch, torchvision, FFCV and numpy, the git commit)."""
    rows = [run_row(experiment, int(seed), RunFolder(folder)) for experiment, seeds in runs.items()
            for seed, folder in seeds.items()]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_row(experiment: str, seed: int, run: RunFolder) -> dict:
    """The row of :func:`runs_table` of one finished run (its history checked against its manifest)."""
    manifest = run.verify([RunFolder.HISTORY])
    last = run.history().iloc[-1]
    computed = manifest.get("computed", {})
    spent = computed.get("seconds_per_epoch") or []
    commit = computed.get("git_commit") or ""
    versions = computed.get("versions") or {}
    stopped = manifest.get("stopped")
    return {"experiment": experiment, "seed": seed, "dataset": (manifest.get("dataset") or {}).get("name") or "",
            "epochs": f"{int(last['epoch'])}/{manifest['spec']['epochs']}",
            "train_loss": float(last["train_loss"]), "train_acc": float(last["train_acc"]),
            "val_acc": float(last["val_acc"]), "test_acc": float(last["test_acc"]),
            "precision": computed.get("precision") or manifest["spec"]["precision"],
            "device": computed.get("device") or "", "processes": computed.get("processes") or 1,
            "s_per_epoch": sum(spent) / len(spent) if spent else float("nan"),
            **{package: versions.get(package) or "" for package in VERSIONS},
            "commit": commit[:10] + ("+changes" if computed.get("git_dirty") else ""),
            "note": f"stopped at epoch {stopped['epoch']}: {stopped['why']}" if stopped else ""}


def runs_html(table: pd.DataFrame, study: str) -> str:
    """The runs table of ``study`` as a page."""
    caption = f"Runs of study {study}: {len(table)} runs of {table['experiment'].nunique()} experiments"
    legend = ("<p>Each run's dataset and last epoch (train loss and accuracy; validation accuracy on the held-out part "
              "of the training set, test accuracy on the test set) and, from its <code>manifest.json</code>, where and "
              "how it was computed: precision, the device's model (a GPU's, or the CPU's), processes, seconds per "
              "epoch, the versions of convbias, torch, torchvision, FFCV and numpy, and the git commit. "
              "<code>convbias status</code> shows the same runs from the command line.</p>")
    return page(caption, table_html(table, caption) + legend)


def write_tables(scorecard: pd.DataFrame, runs: Mapping[str, Mapping], study: str, scorecard_file: str | Path,
                 runs_file: str | Path) -> None:
    """Write the two pages of a study's report (:func:`scorecard_html`, :func:`runs_html`)."""
    from .checkpoints import atomic_write

    for path, text in ((scorecard_file, scorecard_html(scorecard, study)), (runs_file, runs_html(runs_table(runs), study))):
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))


def experiments_runs(experiments: Mapping[str, Mapping]) -> dict[str, dict]:
    """experiment → seed → run folder, from the claims job's ``experiments`` parameter."""
    return {name: {str(seed): run for seed, run in files["runs"].items()} for name, files in experiments.items()}


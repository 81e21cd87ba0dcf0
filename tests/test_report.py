"""The report's pages and captions (convbias.report, workflow/report/*.rst); the report itself,
opened in a browser, is tested on a finished study in test_workflow.py."""

import io
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pandas as pd
import pytest
import yaml
from docutils.core import publish_parts
from snakemake import logging

from convbias.config import load_config
from convbias.params import shown
from convbias.report import rst_escape, runs_html, runs_table, scorecard_html

REPO = Path(__file__).resolve().parents[1]


def rendered(template: Path, categories: dict | None = None, **snakemake) -> str:
    """``template`` as Snakemake's report renders it: Jinja (its settings and context: ``snakemake``,
    the report's ``categories`` → subcategories → results), then docutils to HTML; fails on any
    docutils system message (an undefined |substitution|, unbalanced markup …)."""
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template.read_text()).render(
        snakemake=SimpleNamespace(**snakemake), categories=categories or {}, files=[])
    messages = io.StringIO()
    body = publish_parts(text, writer_name="html", settings_overrides={"warning_stream": messages, "report_level": 1})
    assert messages.getvalue() == "" and "System Message" not in body["html_body"], (text, messages.getvalue())
    return body["html_body"]


def test_every_caption_of_the_config_renders_without_a_system_message():
    """|n_l − ½| in a caption was read as a substitution: 'Undefined substitution referenced'. The
    config's captions, and one that still has the markup that broke it (the shipped ones no longer do)."""
    study = load_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    marked = next(iter(study.figures.values()))
    marked = type(marked).from_config({**marked.to_dict(), "caption": "final bias |n_l − ½| of *every* layer_"})
    for name, figure in [*study.figures.items(), ("marked", marked)]:
        body = rendered(REPO / "workflow" / "report" / "figure.rst", params=SimpleNamespace(spec=figure.to_dict()))
        assert "n_l" not in figure.caption or "n_l" in body, name
    landing = rendered(REPO / "workflow" / "report" / "workflow.rst", config={})
    assert "What this report shows" in landing and "claims scorecard" in landing
    rendered(REPO / "workflow" / "report" / "claims.rst", output=SimpleNamespace(scorecard="results/claims.csv"))
    rendered(REPO / "workflow" / "report" / "runs.rst")


NAN = float("nan")
SCORECARD = pd.DataFrame({"claim": ["C0", "C1", "C2", "C5"], "experiment": ["e"] * 4, "statistic": ["s"] * 4,
                          "threshold": ["t"] * 4, "value": [1.0, 0.25, NAN, 0.4], "low": [NAN, NAN, NAN, -0.2],
                          "high": [NAN, NAN, NAN, 0.7], "per_run": ["", "", "", "0: 0.5; 1: -0.1"],
                          "result": ["holds", "fails", "not applicable", "inconclusive"],
                          "detail": ["", "", "did not learn: runs 1", "inconclusive: the interval holds both"]})


def test_the_landing_page_draws_each_studys_scorecard_and_runs_tables(tmp_path):
    """The landing text includes the pages the claims job wrote, as Snakemake passes the report's
    results to it (category → subcategory → files), scorecard first; a study without them is skipped."""
    pages = {}
    for study in ("quickstart", "ladder"):
        folder = tmp_path / "results" / "report" / study
        folder.mkdir(parents=True)
        (folder / "scorecard.html").write_text(scorecard_html(SCORECARD, study))
        (folder / "runs.html").write_text(runs_html(pd.DataFrame({"experiment": ["e", "e"], "seed": [0, 1]}), study))
        pages[f"Study {study}"] = {"Claims and runs": [SimpleNamespace(target=f"{page}.html", path=folder / f"{page}.html")
                                                       for page in ("runs", "scorecard")]}
    pages["Study other"] = {"Figures": [SimpleNamespace(target="fig.pdf", path=tmp_path / "fig.pdf")]}
    landing = rendered(REPO / "workflow" / "report" / "workflow.rst", categories=pages, config={})
    shown = [landing.index(caption) for caption in ("Claims scorecard of study ladder: 1 holds", "Runs of study ladder: 2 runs",
                                                    "Claims scorecard of study quickstart", "Runs of study quickstart")]
    assert shown == sorted(shown) and landing.count("<tr>") == 2 * (5 + 3), landing
    assert "<body" not in landing and landing.count("<style") == 1  # the pages bring no stylesheet, nor a page
    rules = re.search(r"<style>(.*?)</style>", landing, re.S).group(1).strip().splitlines()
    assert rules and all("convbias-landing" in rule.split("{")[0] for rule in rules), rules  # restyles only the landing


def test_job_parameters_are_shown_as_settings_and_compare_as_before():
    """The report's job details print each parameter with str(): `key: value; …`, not a Python
    dict; Snakemake decides that a parameter changed by its repr, which must stay a dict's (a
    wrapped parameter reruns nothing), and the job's script gets it back equal (pickle)."""
    spec = {"kind": "critical", "caption": "Biased |n_l − ½|\n  of LeNet.\n", "layer": 1, "experiments": ["a", "b"],
            "train_accuracy": {"alexnet": 0.57}, "none": {}}
    runs = [("a", 0), ("a", 1)]
    assert str(shown(spec)) == ("kind: critical; caption: Biased |n_l − ½| of LeNet.; layer: 1; experiments: [a, b]; "
                                "train_accuracy: (alexnet: 0.57); none: none")
    assert str(shown(runs)) == "a 0; a 1" and str(shown([])) == "none"
    for value in (spec, runs, [], {"nested": [{"x": (1, [2])}]}):
        assert repr(shown(value)) == repr(value) and shown(value) == value
        assert pickle.loads(pickle.dumps(shown(value))) == value
    assert "{" not in logging.format_dict({"spec": shown(spec), "runs": shown(runs)})  # as the report formats them


def test_rst_escape_keeps_text_as_it_is():
    text = "|n_l − ½| of *every* `layer`_ \\ end"
    messages = io.StringIO()
    body = publish_parts(rst_escape(text), writer_name="html", settings_overrides={"warning_stream": messages})
    assert messages.getvalue() == "" and "|n_l − ½| of *every* `layer`_ \\ end" in body["body"].replace("&lt;", "<")


def test_the_scorecard_page_colours_each_result_and_counts_them():
    page = scorecard_html(SCORECARD, "quickstart")
    assert "Claims scorecard of study quickstart: 1 holds, 1 fails, 1 inconclusive, 1 not applicable" in page
    assert re.search(r'<td style="[^"]*background:#8fd18b">holds</td>', page)
    assert re.search(r'<td style="[^"]*background:#f08a7e">fails</td>', page)
    assert re.search(r'<td style="[^"]*background:#f5d36b">inconclusive</td>', page)
    assert page.count("<tr>") == 5 and re.search(r'<td style="[^"]*">0.25</td>', page)
    # what was found, a sentence per claim, before the table
    assert page.index("What study quickstart found") < page.index("<table")
    assert "<b>C5</b>, biased layers are the critical ones: inconclusive for e (0.4, over runs -0.2 to 0.7: the " \
           "interval holds both).</li>" in page and page.count("<li ") == 4


@pytest.fixture(scope="module")
def two_runs(tiny_converted, tmp_path_factory):
    """A run of LeNet that learns and one that diverges (lr 10⁴: stopped at epoch 1)."""
    from convbias.specs import ModelSpec, TrainSpec
    from convbias.train import train_run

    meta, train, test = tiny_converted
    root = tmp_path_factory.mktemp("runs")
    spec = TrainSpec(model=ModelSpec("lenet", width=0.5, hidden=16, dropout=0.0), epochs=2, batch_size=64, lr=0.01)
    for seed, lr in ((0, 0.01), (1, 1e4)):
        train_run(TrainSpec.from_dict({**spec.to_dict(), "lr": lr}), seed, meta, train, test,
                  root / "runs" / "e" / f"seed{seed}", root / "resume" / "e" / f"seed{seed}")
    return {"e": {"0": root / "runs" / "e" / "seed0", "1": root / "runs" / "e" / "seed1"}}


def test_the_runs_table_has_each_runs_final_accuracies_and_where_it_was_computed(two_runs):
    table = runs_table(two_runs)
    assert list(table["seed"]) == [0, 1] and list(table["epochs"]) == ["2/2", "1/2"]
    history = pd.read_parquet(two_runs["e"]["0"] / "history.parquet")
    assert table.loc[0, "test_acc"] == pytest.approx(history["test_acc"].iloc[-1])
    assert table.loc[0, "precision"] == "fp32" and table.loc[0, "device"].startswith("cpu")
    assert table.loc[0, "torch"] and table.loc[0, "s_per_epoch"] > 0
    from importlib.metadata import version

    for package in ("torchvision", "ffcv", "numpy"):  # what this process runs: the runs were trained here
        assert table.loc[0, package] == version(package), package
    assert list(table["dataset"]) == ["tiny", "tiny"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: the CPU's model as its maker names it, not the architecture
        models = {line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")}
        assert table.loc[0, "device"] in {f"cpu: {model}" for model in models}, table.loc[0, "device"]
    assert table.loc[0, "note"] == "" and table.loc[1, "note"].startswith("stopped at epoch 1: its train loss is")

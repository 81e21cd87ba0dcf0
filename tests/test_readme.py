"""README.md states what the code says (issue 36): every plan, size and time figure it gives for a
target is what `convbias plan` prints from the shipped config alone, the plan's constants are the
ones `convbias.resources` uses, every snakemake command names its target before its options, and
the report command writes where `make report` does.

Each README number is compared at the README's precision (the printed value rounded to as many
decimals as the README gives), so a change on either side fails here."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import re
import shlex
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import yaml

from convbias import cli, resources

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"
TABLE_TARGETS = {"smoke", "quickstart", "ladder", "results/fig7.pdf", "cifar", "all"}

SUMMARY = re.compile(
    r"^(?P<target>\S+): (?P<runs>\d+) runs; disk (?P<disk>\S+) GB of runs \+ (?P<data>\S+) GB of converted "
    r"datasets; largest job (?P<host>\S+) GB of host memory"
    r"(?:, (?P<gpu_mem>\S+) GB of GPU memory; (?P<gpu_hours>\S+) GPU-hours)?"
    r"(?:; (?P<cpu_hours>\S+) CPU core-hours)?$", re.M)
WALL = re.compile(r"^\S+ (?:on |one )[^:\n]*: ≈ (?P<wall>[\d.]+ (?:s|min|h))", re.M)
DURATION = r"[\d.]+ (?:s|min|h)"


def readme() -> str:
    return (ROOT / "README.md").read_text()


def same(stated: str, printed) -> bool:
    """Whether ``stated`` (README) is ``printed`` rounded to the README's precision."""
    stated = Decimal(stated)
    return Decimal(str(printed)).quantize(stated, rounding=ROUND_HALF_UP) == stated


def same_duration(stated: str, printed: str) -> bool:
    (number, unit), (p_number, p_unit) = stated.split(), printed.split()
    return unit == p_unit and same(number, p_number)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """``plan(target)``: the numbers `convbias plan TARGET --cores 2` prints from the config alone."""
    nowhere = tmp_path_factory.mktemp("nowhere")  # no finished runs, no benchmark files
    printed = {}

    def run(target: str) -> dict:
        if target not in printed:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = cli.main(["plan", target, "--config", str(CONFIG), "--runs", str(nowhere / "runs"),
                                 "--benchmarks", str(nowhere / "benchmarks"), "--cores", "2"])
            text = out.getvalue()
            assert code == 0, text
            summary, wall = SUMMARY.search(text), WALL.search(text)
            assert summary and summary["target"] == target and wall, f"convbias plan {target} printed:\n{text}"
            printed[target] = {**summary.groupdict(), "wall": wall["wall"]}
        return printed[target]

    return run


def plan_table() -> dict[str, dict[str, str]]:
    """README's table of targets: {target: {column: cell}}."""
    lines = readme().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| study (target) |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        rows[cells["study (target)"].strip("`")] = cells
    return rows


def test_the_plan_table_is_what_convbias_plan_prints(plan):
    table = plan_table()
    assert set(table) == TABLE_TARGETS
    for target, row in table.items():
        printed = plan(target)
        where = f"README's plan table, row {target}: {{}} — convbias plan {target} prints {printed}"
        assert row["runs"] == printed["runs"], where.format(row["runs"])
        disk = re.match(r"(\S+) GB \+ (\S+) GB", row["disk: runs + datasets"])
        assert disk and same(disk[1], printed["disk"]) and same(disk[2], printed["data"]), \
            where.format(row["disk: runs + datasets"])
        memory = re.fullmatch(r"(\S+) GB / (?:–|(\S+) GB)", row["largest job: host / GPU memory"])
        assert memory and same(memory[1], printed["host"]), where.format(row["largest job: host / GPU memory"])
        assert (memory[2] is None) == (printed["gpu_mem"] is None), where.format(row["largest job: host / GPU memory"])
        if memory[2] is not None:
            assert same(memory[2], printed["gpu_mem"]), where.format(row["largest job: host / GPU memory"])
        compute = re.fullmatch(r"(\S+) (GPU-hours|CPU core-hours)", row["compute"])
        assert compute, where.format(row["compute"])
        hours = printed["gpu_hours" if compute[2] == "GPU-hours" else "cpu_hours"]
        assert hours is not None and same(compute[1], hours), where.format(row["compute"])
        wall = re.match(rf"≈ ({DURATION})", row["plan's wall time"])
        assert wall and same_duration(wall[1], printed["wall"]), where.format(row["plan's wall time"])


def statement(pattern: str) -> re.Match:
    """The one README passage ``pattern`` (whitespace: any, line breaks included) finds."""
    found = list(re.finditer(pattern.replace(" ", r"\s+"), readme()))
    assert len(found) == 1, f"README should say this once, found {len(found)} times: {pattern}"
    return found[0]


def test_the_commands_comments_are_what_convbias_plan_prints(plan):
    quickstart = statement(rf"convbias plan quickstart --cores 2 # [^\n]*?(\d+) runs, (\S+) CPU core-hours, "
                           rf"≈ ({DURATION}) on 2 cores")
    printed = plan("quickstart")
    assert quickstart[1] == printed["runs"] and same(quickstart[2], printed["cpu_hours"]), quickstart[0]
    assert same_duration(quickstart[3], printed["wall"]), quickstart[0]

    fig7 = statement(rf"convbias plan fig7 # [^\n]*?(\d+) runs, (\S+) GB, (\S+) GPU-hours, ≈ ({DURATION})")
    printed = plan("fig7")
    assert fig7[1] == printed["runs"] and same(fig7[2], printed["disk"]), fig7[0]
    assert same(fig7[3], printed["gpu_hours"]) and same_duration(fig7[4], printed["wall"]), fig7[0]

    printed = plan("ladder")
    for said in (statement(rf"snakemake ladder --cores all # [^\n]*\(≈ ({DURATION}) on 2 cores\)"),
                 statement(rf"`convbias plan ladder --cores 2`: ≈ ({DURATION})")):
        assert same_duration(said[1], printed["wall"]), said[0]


def test_the_plans_assumptions_are_the_codes():
    assert same(statement(r"host memory adds (\S+) GB per process")[1], resources.BASE_MB / 1024)
    assert resources.MARGIN == 1.25 and statement(r"and a quarter of margin")
    assert same(statement(r"the quickstart's measured (\d+) GFLOP/s per core")[1], resources.ASSUMED_CPU_FLOPS / 1e9)
    assert same(statement(r"in fp32 (\d+) TFLOP/s at 32×32")[1], resources.GPU_FLOPS["small"]["fp32"] / 1e12)
    assert same(statement(r"and (\d+) TFLOP/s at 224²")[1], resources.GPU_FLOPS["large"]["fp32"] / 1e12)
    assert same(statement(r"forward passes alone \(evaluations, sweeps\) run at (\d+) GFLOP/s")[1],
                resources.CPU_FORWARD_FLOPS / 1e9)
    assert same(statement(r"each SGD step adds (\d+) ns per parameter")[1],
                resources.CPU_SECONDS_PER_PARAMETER_STEP * 1e9)


def test_the_sizes_of_vgg19_runs_are_the_codes():
    """"Without `snapshots: conv` … 56 GB each (1.2 TB for the CIFAR part) instead of 9 GB", and a
    commit's "1.1 GB of state" (weights and momentum) — of the paper study's VGG19 on CIFAR-10."""
    from convbias.config import load_config
    from convbias.plan import plan as plan_of

    study = load_config(yaml.safe_load(CONFIG.read_text()))

    def run_bytes(name: str, snapshots: str) -> int:
        exp = study.experiments[name]
        model = resources.model_of(exp, resources.data_size(study.datasets[exp.dataset]))
        return resources.run_bytes(dataclasses.replace(exp.train, snapshots=snapshots), model)

    said = statement(r"VGG19 runs would keep (\d+) GB each \((\S+) TB for the CIFAR part\) instead of (\d+) GB")
    assert study.experiments["vgg19_cifar10_step"].train.snapshots == "conv"
    assert same(said[1], run_bytes("vgg19_cifar10_step", "full") / 1e9), said[0]
    cifar = plan_of(study, "cifar", ROOT / "nowhere", ROOT / "nowhere")
    assert same(said[2], sum(r.runs * run_bytes(r.experiment, "full") for r in cifar.itertuples()) / 1e12), said[0]
    assert same(said[3], run_bytes("vgg19_cifar10_step", "conv") / 1e9), said[0]
    exp = study.experiments["vgg19_cifar10_step"]
    model = resources.model_of(exp, resources.data_size(study.datasets[exp.dataset]))
    state = statement(r"waiting for its (\S+) GB of state")
    assert same(state[1], 2 * model.state_bytes / 1e9), state[0]


# --- every snakemake command names its target first -------------------------------------------

TARGETS = {"all", "cifar", "quickstart", "smoke", "ladder", "download", "TARGET", "…"}


def snakemake_commands() -> list[str]:
    """Every `snakemake …` command of README.md: lines of its code blocks and inline code."""
    text, commands = readme(), []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("snakemake "):
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [" ".join(c.split()) for c in re.findall(r"`(snakemake\s[^`]*)`", prose)]
    return commands


@functools.cache
def snakemake_options() -> dict:
    """{option string: its argparse action} of Snakemake's command line."""
    from snakemake.cli import get_argument_parser

    return {name: a for a in get_argument_parser()._actions for name in a.option_strings}


def misplaced(command: str) -> list[tuple[str, str]]:
    """(option, word) for each target of ``command`` written after an option that takes a value —
    where the option would take it as its value (``--configfile my.yaml quickstart``: a second
    config file), or where the rule is broken that a target comes first."""
    actions = snakemake_options()
    words, wrong, option, i = shlex.split(command)[1:], [], None, 0
    while i < len(words):
        word, i = words[i], i + 1
        if not word.startswith("-"):
            if option:
                wrong.append((option, word))
            continue
        name, inline, _ = word.partition("=")
        action = actions[name]  # an option Snakemake does not have is a README error too
        if inline or action.nargs == 0:
            continue
        option = name
        if action.nargs is None or (action.nargs == "?" and i < len(words) and not words[i].startswith("-")):
            i += 1  # its one value
        elif action.nargs in ("*", "+"):  # every word up to the next option is its value
            while i < len(words) and not words[i].startswith("-"):
                if "=" not in words[i] and (words[i] in TARGETS or "/" in words[i]):
                    wrong.append((name, words[i]))
                i += 1
    return wrong


def test_the_target_check_finds_the_issues_example():
    assert misplaced("snakemake -n --configfile my.yaml quickstart") == [("--configfile", "quickstart")]
    assert misplaced("snakemake --cores 16 --resources gpu=2 results/fig7.pdf") == [("--resources", "results/fig7.pdf")]
    assert misplaced("snakemake --cores all quickstart") == [("--cores", "quickstart")]
    assert misplaced("snakemake -n quickstart --configfile my.yaml") == []


def test_every_snakemake_command_names_its_target_first():
    commands = snakemake_commands()
    assert len(commands) >= 20, commands
    wrong = {c: found for c in commands if (found := misplaced(c))}
    assert not wrong, f"README commands with a target after an option that takes a value: {wrong}"


def test_the_report_command_writes_where_make_report_does():
    make = re.search(r"^report:.*\n\t.*snakemake --report (\S+) quickstart$", (ROOT / "Makefile").read_text(), re.M)
    assert make, "the Makefile's report target"
    reports = [c for c in snakemake_commands() if "--report" in c]
    assert "make report" in readme() and reports
    for command in reports:
        words = shlex.split(command)
        if "quickstart" in words:
            assert words[words.index("--report") + 1] == make[1], command


LADDER_TABLES = ("docs/ladder", "docs/replication", "docs/replication/pooled")


def test_the_ladders_numbers_in_the_readme_are_what_its_committed_tables_score_to(capsys):
    """README's ladder table is what tools/ladder_table.py prints from the tables committed under
    docs/ (every rung's runs, scored by today's rules), and each folder's committed claims.csv is
    what the scorecard makes of it: no number of the section is copied by hand."""
    import sys

    import pandas as pd

    from convbias.claims import scorecard
    from convbias.evidence import read_evidence
    from convbias.specs import ClaimsSpec

    sys.path.insert(0, str(ROOT / "tools"))
    from ladder_table import main as ladder_table

    spec = ClaimsSpec.from_config({**yaml.safe_load(CONFIG.read_text())["claims"], "train_accuracy": {}})
    for folder in LADDER_TABLES:
        committed, scored = pd.read_csv(ROOT / folder / "claims.csv"), scorecard(read_evidence(ROOT / folder), spec)
        assert list(committed["result"]) == list(scored["result"]), folder
        assert committed["value"].tolist() == pytest.approx(scored["value"].tolist(), nan_ok=True), folder
    assert ladder_table([str(ROOT / f) for f in LADDER_TABLES] + ["--config", str(CONFIG)]) == 0
    table = capsys.readouterr().out.strip()
    assert table in readme(), table

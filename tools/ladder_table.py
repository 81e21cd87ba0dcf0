"""The README's ladder table, scored from evidence folders (what claims jobs wrote, or their copies
under docs/): a row per experiment — its runs, their final test accuracies, and C0, C2, C5 and C6
with value, interval over runs and verdict. tests/test_readme.py holds README.md to what this prints.

    python tools/ladder_table.py docs/ladder docs/replication docs/replication/pooled
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

from convbias.claims import bias_and_criticality, c5_statistic, per_run_values, scorecard
from convbias.evidence import read_evidence
from convbias.specs import ClaimsSpec

HEADER = ("| experiment | runs (seeds) | final test accuracy per run | C0 learned | C2 layers 2–16 biased "
          "[interval] | C5 ρ of q [interval]; per run | earlier C5: ρ of \\|n_l − ½\\| | C6 test − val [interval] |\n"
          "|---|---|---|---|---|---|---|---|")


def _cell(row: pd.Series) -> str:
    """``**verdict**: value [low, high]`` of a scorecard row; ``n/a`` where it does not apply."""
    if row["result"] in ("not applicable", "not run"):
        return "n/a" if row["result"] == "not applicable" else "not run"
    said = f"{row['value']:.2f}" + ("" if pd.isna(row["low"]) else f" [{row['low']:.2f}, {row['high']:.2f}]")
    return f"**{row['result']}**: {said}"


def rows(folder: str | Path, spec: ClaimsSpec) -> list[str]:
    """The table's rows for the experiments of one evidence folder."""
    evidence = read_evidence(folder)
    table = scorecard(evidence, spec).set_index(["experiment", "claim"])
    lines = []
    for ev in evidence:
        final = ev.history.sort_values("epoch").groupby("seed").last()
        own = table.loc[ev.experiment]
        c5 = own.loc["C5"]
        scored = c5["result"] not in ("not applicable", "not run")
        per_run = "; " + ", ".join(f"{r:.2f}" for r in per_run_values(c5["per_run"])) if scored else ""
        earlier = "n/a"
        if scored:  # the statistic of earlier scorecards, for comparison: a description, not a verdict
            old, _ = c5_statistic(bias_and_criticality(ev.measure, ev.reinit, spec.reset_epoch), spec.interval, "bias")
            earlier = f"{float(old.rho):.2f} (p {float(old.p):.2g})"
        c6 = own.loc[["C6"]].iloc[0]  # the test − validation row (train accuracy rows follow it)
        lines.append(" | ".join([
            f"| {ev.experiment}", ", ".join(str(s) for s in final.index),
            ", ".join(f"{a:.2f}" for a in final["test_acc"]),
            f"**{own.loc['C0', 'result']}**" + (f" ({own.loc['C0', 'detail'].split(';')[0]})"
                                                if own.loc["C0", "result"] == "fails" else ""),
            _cell(own.loc["C2"]), _cell(c5) + per_run, earlier,
            f"**{c6['result']}**: {c6['value']:+.3f}" + ("" if pd.isna(c6["low"]) else f" [{c6['low']:+.3f}, {c6['high']:+.3f}]")]) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="evidence folders, their rows in this order")
    parser.add_argument("--config", default="config/config.yaml", help="whose claims section sets the thresholds")
    args = parser.parse_args(argv)
    section = (yaml.safe_load(Path(args.config).read_text()) or {}).get("claims", {})
    spec = ClaimsSpec.from_config({**section, "train_accuracy": {}})
    print(HEADER)
    for folder in args.folders:
        print("\n".join(rows(folder, spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

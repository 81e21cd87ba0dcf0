"""Pool the runs of experiments from evidence folders (what claims jobs wrote, convbias.evidence) into
one experiment of a new folder, to score them together: `convbias claims OUT`. The ladder's
replication pools each rung's seeds 0-2 with its fresh seeds 3-5 (config/README.md, "The ladder").

    python tools/pool_evidence.py docs/ladder/pooled \\
        --experiment ladder_w8_e16=docs/ladder:ladder_w8_e16,docs/replication:ladder_w8_e16_seeds345
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from convbias.evidence import TABLES, Evidence, read_evidence, write_evidence


def pooled(name: str, parts: list[Evidence]) -> Evidence:
    """One experiment ``name`` with every run of ``parts`` (their seeds must differ, their data agree)."""
    seeds = [set(part.history["seed"]) for part in parts]
    if len(set().union(*seeds)) != sum(map(len, seeds)):
        raise ValueError(f"{name}: the experiments share seeds {sorted(set.intersection(*seeds))}: pool distinct runs")
    described = {(p.num_classes, p.channels, p.expect_learning, p.val_images) for p in parts}
    if len(described) != 1:
        raise ValueError(f"{name}: the experiments differ in classes, channels, expect_learning or validation split")
    tables = {t: [getattr(p, t) for p in parts if getattr(p, t) is not None] for t in TABLES}
    joined = {t: pd.concat(frames, ignore_index=True).assign(**({"experiment": name} if "experiment" in frames[0] else {}))
              if frames else None for t, frames in tables.items()}
    first = parts[0]
    return Evidence(name, joined["measure"], joined["history"], joined["reinit"], first.num_classes, first.channels,
                    first.expect_learning, first.val_images)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the evidence folder to write")
    parser.add_argument("--experiment", action="append", required=True, metavar="NAME=FOLDER:EXP,FOLDER:EXP",
                        help="an experiment of the new folder and the experiments it pools (repeatable)")
    args = parser.parse_args(argv)
    folders, evidence = {}, []
    for entry in args.experiment:
        name, sources = entry.split("=", 1)
        parts = []
        for source in sources.split(","):
            folder, experiment = source.rsplit(":", 1)
            if folder not in folders:
                folders[folder] = {e.experiment: e for e in read_evidence(folder)}
            found = folders[folder]
            if experiment not in found:
                print(f"pool_evidence: {folder} has no experiment {experiment!r} (it has {', '.join(found)})",
                      file=sys.stderr)
                return 2
            parts.append(found[experiment])
        try:
            evidence.append(pooled(name, parts))
        except ValueError as err:
            print(f"pool_evidence: {err}", file=sys.stderr)
            return 2
    write_evidence(evidence, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

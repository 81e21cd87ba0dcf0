"""What the claims scorecard reads of one experiment (:class:`Evidence`), and a study's evidence as
small tables in a folder — written by the claims job, read back to score a study again without
its runs (``convbias claims FOLDER``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TABLES = ("measure", "history", "reinit")


@dataclass(frozen=True)
class Evidence:
    """What the study computed for one experiment."""

    experiment: str
    measure: pd.DataFrame  # the measure table: every (seed, epoch, layer)
    history: pd.DataFrame  # the training history of every run, with its seed
    reinit: pd.DataFrame | None  # the re-initialization tables of its runs; None: no sweep
    num_classes: int
    channels: int
    expect_learning: str = "generalize"  # the experiment's expect_learning: generalize | memorize | none
    val_images: int | None = None  # images of the validation split (C6's noise); None: not known


def write_evidence(evidence: list[Evidence], folder: str | Path) -> None:
    """``folder``/experiments.json (each experiment's classes, channels, expect_learning, validation
    images, in order) and ``folder``/<experiment>/{measure,history,reinit}.parquet (no reinit: no sweep)."""
    folder = Path(folder)
    described = {}
    for ev in evidence:
        (folder / ev.experiment).mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            table = getattr(ev, name)
            if table is not None:
                table.to_parquet(folder / ev.experiment / f"{name}.parquet", index=False)
        described[ev.experiment] = {"num_classes": ev.num_classes, "channels": ev.channels,
                                    "expect_learning": ev.expect_learning, "val_images": ev.val_images}
    (folder / "experiments.json").write_text(json.dumps(described, indent=2) + "\n")


def read_evidence(folder: str | Path) -> list[Evidence]:
    """The evidence :func:`write_evidence` wrote to ``folder``."""
    folder = Path(folder)
    listing = folder / "experiments.json"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} does not exist: give the folder a claims job wrote "
                                f"(results/evidence/<study>) or a copy of it")
    evidence = []
    for name, described in json.loads(listing.read_text()).items():
        tables = {t: pd.read_parquet(folder / name / f"{t}.parquet") if (folder / name / f"{t}.parquet").exists()
                  else None for t in TABLES}
        evidence.append(Evidence(name, tables["measure"], tables["history"], tables["reinit"], **described))
    return evidence

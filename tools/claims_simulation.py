"""How often the scorecard's C2 and C5 say "holds" in synthetic studies with no biased layer, and
how often they find the paper's effect when it is planted — for every filter-count profile of the
study (LeNet, VGG11–19, AlexNet at widths 1/8 to 1), beside the earlier scorecard's statistics
(config/README.md, "claims"; convbias.simulation says what a synthetic study is).

    python tools/claims_simulation.py --studies 2000 --runs 3
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from convbias.models import ARCHS, filter_counts
from convbias.simulation import DROPS, c2_rates, c5_rates, studies
from convbias.specs import ClaimsSpec


def null_table(count: int, runs: int, spec: ClaimsSpec, seed: int = 0,
               widths=(0.125, 0.25, 0.5, 1.0)) -> pd.DataFrame:
    """One row per (architecture, width, drop profile) with no layer biased: the share of studies
    in which C5 holds, fails, is inconclusive, in which the earlier C5 held, and the same of C2."""
    rng, rows = np.random.default_rng(seed), []
    for arch in ARCHS:
        for width in widths:
            filters = filter_counts(arch, width)
            c2 = c2_rates(studies(filters, runs, count, rng), spec)
            for drops in DROPS:
                c5 = c5_rates(studies(filters, runs, count, rng, drops=drops), spec)
                rows.append({"arch": arch, "width": width, "drops": drops, **{f"C5 {k}": v for k, v in c5.items()},
                             "C2 holds": c2["holds"], "C2 old holds": c2["old holds"]})
    return pd.DataFrame(rows)


def planted_table(count: int, runs: int, spec: ClaimsSpec, seed: int = 1,
                  widths=(0.125, 0.25, 0.5, 1.0)) -> pd.DataFrame:
    """VGG19 with the paper's effect: C5 with layers 1–8 biased (n = ``paper_n_l``) and critical,
    9–16 unbiased and ambient; C2 with every layer biased."""
    rng, rows = np.random.default_rng(seed), []
    for width in widths:
        filters = filter_counts("vgg19", width)
        c5 = c5_rates(studies(filters, runs, count, rng, biased_layers=8, biased_n=spec.paper_n_l), spec)
        c2 = c2_rates(studies(filters, runs, count, rng, biased_layers=len(filters), biased_n=spec.paper_n_l), spec)
        rows.append({"width": width, **{f"C5 {k}": v for k, v in c5.items()}, **{f"C2 {k}": v for k, v in c2.items()}})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=2000, help="synthetic studies per row")
    parser.add_argument("--runs", type=int, default=3, help="runs (seeds) per study")
    args = parser.parse_args(argv)
    spec = ClaimsSpec.from_config({})
    pd.set_option("display.width", 200)
    null = null_table(args.studies, args.runs, spec)
    print(f"No layer biased ({args.studies} studies of {args.runs} runs per row): share of studies per verdict")
    print(null.round(3).to_string(index=False))
    worst = null.loc[null["C5 holds"].idxmax()]
    print(f"\nC5 holds at most {worst['C5 holds']:.3f} ({worst['arch']} width {worst['width']}, drops {worst['drops']}); "
          f"the earlier C5 up to {null['C5 old holds'].max():.3f}; C2 holds at most {null['C2 holds'].max():.3f}")
    print(f"\nThe paper's effect planted in VGG19 ({args.studies} studies of {args.runs} runs per row)")
    print(planted_table(args.studies, args.runs, spec).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rule pretrained_filters: the filter table of a pretrained network (epoch 1) and of a random init (epoch 0)."""

import sys

from convbias.checkpoints import WeightsError
from convbias.harness import log_to
from convbias.jobs import pretrained_filters

log_to(snakemake.log)  # this job's output goes to its rule's log file

name = snakemake.wildcards.pretrained
try:
    table = pretrained_filters(snakemake.params.spec.typed, name)
except WeightsError as err:
    sys.exit(f"error: pretrained.{name}.weights: {err}")
except ValueError as err:
    sys.exit(f"error: pretrained.{name}: {err}")
table.to_parquet(snakemake.output[0], index=False)

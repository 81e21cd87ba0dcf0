"""Rule pretrained_stats: cosines of a pretrained network (epoch 1) and of a random init (epoch 0)."""

import sys

import pandas as pd
import torch

from convbias.checkpoints import WeightsError
from convbias.cli import read_filters
from convbias.config import ModelSpec
from convbias.models import build_model, conv_layers, initialize
from convbias.stats import checkpoint_filters

spec = snakemake.params.spec
try:
    _, trained = read_filters(spec["weights"], spec["include_1x1"], spec["download"])
except WeightsError as err:
    sys.exit(f"error: pretrained.{snakemake.wildcards.pretrained}.weights: {err}")
torch.manual_seed(spec["seed"])
model = initialize(build_model(ModelSpec(spec["arch"], head="torchvision"), 3, 1000, 224), spec["init"], spec["init_std"])
order = [name for name, _ in conv_layers(model)]
init = checkpoint_filters(model.state_dict(), order, include_1x1=spec["include_1x1"])
if init["layer"].max() != trained["layer"].max():
    sys.exit(f"error: pretrained.{snakemake.wildcards.pretrained}: the weights have {trained['layer'].max()} conv "
             f"layers but {spec['arch']} has {init['layer'].max()}; check arch")
table = pd.concat([init.assign(epoch=0), trained.assign(epoch=1)], ignore_index=True)
table.insert(0, "network", snakemake.wildcards.pretrained)
table.to_parquet(snakemake.output[0], index=False)

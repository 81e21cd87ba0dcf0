"""Rule reinit: re-initialization robustness of one run on the test set."""

from pathlib import Path

import torch

from convbias.checkpoints import load_weights
from convbias.config import TrainSpec
from convbias.data.ffcv_io import BatchTransform, DatasetMeta, load_split
from convbias.devices import job_gpus, job_threads, resolve_device, set_precision, use_device
from convbias.reinit import RAND_SEED_OFFSET, reinit_sweep
from convbias.train import init_model

spec = TrainSpec.from_dict(snakemake.params.spec)
seed = int(snakemake.wildcards.seed)
meta = DatasetMeta.load(snakemake.input.meta)
threads = job_threads(snakemake.threads)
torch.set_num_threads(threads)

with job_gpus(snakemake.params.device):  # before anything starts CUDA (the loaders do)
    device = resolve_device(snakemake.params.device)
    use_device(device)
    set_precision(spec.precision)
    run = Path(snakemake.input.run)
    sources = {"rand": init_model(spec, meta, seed + RAND_SEED_OFFSET).state_dict()}
    for epoch in range(spec.epochs + 1):
        sources[str(epoch)] = load_weights(run / f"epoch{epoch:03d}.safetensors")
    images, labels = load_split(snakemake.input.test, meta=meta, workers=threads)
    # the test set stays on the device as bytes; each chunk is scaled there when its turn comes
    model = init_model(spec, meta, seed).to(device, memory_format=torch.channels_last)
    table = reinit_sweep(model, sources[str(spec.epochs)], sources, images.to(device), labels.to(device),
                         transform=BatchTransform(meta, device), precision=spec.precision)
table.insert(0, "seed", seed)
table.insert(0, "experiment", snakemake.wildcards.experiment)
table.to_parquet(snakemake.output[0], index=False)

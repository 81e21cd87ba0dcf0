"""Rule train: one seed of one experiment, resumable."""

from convbias.config import TrainSpec
from convbias.data.ffcv_io import DatasetMeta
from convbias.train import train_run

train_run(
    TrainSpec.from_dict(snakemake.params.spec),
    int(snakemake.wildcards.seed),
    DatasetMeta.load(snakemake.input.meta),
    snakemake.input.train,
    snakemake.input.test,
    out_dir=snakemake.output[0],
    work_dir=snakemake.params.work,
    device=snakemake.params.device,
    threads=snakemake.threads,
)

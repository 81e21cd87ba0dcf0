"""Rule figure: draw one figure of the config from its tables."""

from convbias.jobs import figure

figure(snakemake.params.spec, dict(snakemake.input.items()), snakemake.params.runs).savefig(snakemake.output[0])

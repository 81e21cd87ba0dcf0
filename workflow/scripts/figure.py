"""Rule figure: draw one figure of the config from its tables."""

from convbias.jobs import figure, stops_with_one_sentence
from convbias.specs import FigureSpec

spec = FigureSpec.from_config(snakemake.params.spec)
with stops_with_one_sentence():
    figure(spec, dict(snakemake.input.items()), snakemake.params.runs).savefig(snakemake.output[0])

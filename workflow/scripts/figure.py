"""Rule figure: draw one figure of the config from its tables."""

from convbias.harness import log_to, stops_with_one_sentence
from convbias.jobs import figure
from convbias.specs import FigureSpec

log_to(snakemake.log)  # this job's output goes to its rule's log file

spec = FigureSpec.from_config(snakemake.params.spec)
with stops_with_one_sentence():
    figure(spec, dict(snakemake.input.items()), snakemake.params.runs, snakemake.params.scales).savefig(
        snakemake.output[0])

"""Rule figure: draw one figure of the config from its tables."""

from convbias.harness import log_to, stops_with_one_sentence
from convbias.jobs import figure

log_to(snakemake.log)  # this job's output goes to its rule's log file

spec, params = snakemake.params.spec.typed, snakemake.params  # the typed convbias.specs.FigureSpec the rule built
with stops_with_one_sentence():
    figure(spec, dict(snakemake.input.items()), params.runs, params.scales).savefig(snakemake.output[0])

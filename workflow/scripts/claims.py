"""Rule claims: the claims scorecard of a study, written as CSV and printed in the job's log with its
findings, the tables it read (to score them again: convbias claims), and the scorecard and runs pages
of its report (convbias.report)."""

from convbias.claims import findings, summary
from convbias.harness import log_to, stops_with_one_sentence
from convbias.jobs import claims
from convbias.report import experiments_runs, write_tables

log_to(snakemake.log)  # this job's output goes to its rule's log file

with stops_with_one_sentence():
    table = claims(snakemake.params.spec.typed, snakemake.params.experiments, snakemake.output.evidence)
    table.to_csv(snakemake.output.scorecard, index=False)
    write_tables(table, experiments_runs(snakemake.params.experiments), snakemake.params.study,
                 snakemake.output.scorecard_page, snakemake.output.runs_page)
print("\n".join(findings(table)), end="\n\n")
print(summary(table))  # its last line counts each verdict

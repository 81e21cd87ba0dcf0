# One claims scorecard per study (paper: results/claims.csv; quickstart: results/quickstart/claims.csv).
for _study in sorted({fig.study for fig in FIGURES.values()}):

    rule:
        """Whether each of the paper's claims holds in what the study computed (convbias.claims)."""
        name:
            f"claims_{_study}"
        input:
            claims_inputs(_study),
        output:
            report(claims_file(_study), caption="../report/claims.rst", category="Claims"),
        log:
            f"logs/claims/{_study}.log",
        localrule: True
        conda:
            ENV
        params:
            spec=STUDY.claims.to_dict(),
            experiments=claims_experiments(_study),
        script:
            "../scripts/claims.py"

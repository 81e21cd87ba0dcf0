# One claims scorecard per study (paper: results/claims.csv; quickstart: results/quickstart/claims.csv).
for _study in sorted({fig.study for fig in FIGURES.values()}):

    rule:
        """Whether each of the paper's claims holds in what the study computed (convbias.claims)."""
        name:
            f"claims_{_study}"
        input:
            claims_inputs(_study),
        output:
            scorecard=claims_file(_study),
            evidence=directory(evidence_dir(_study)),
            scorecard_page=report(
                report_file(_study, "scorecard"),
                caption="../report/claims.rst",
                category=report_category(_study),
                subcategory="Claims and runs",
                labels={"page": "claims scorecard"},
            ),
            runs_page=report(
                report_file(_study, "runs"),
                caption="../report/runs.rst",
                category=report_category(_study),
                subcategory="Claims and runs",
                labels={"page": "runs"},
            ),
        log:
            f"logs/claims/{_study}.log",
        localrule: True
        conda:
            ENV
        params:
            study=_study,
            spec=spec_param(claims_spec(_study)),
            experiments=claims_param(_study),
        script:
            "../scripts/claims.py"

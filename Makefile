# Two commands for a fresh Debian machine (Python 3.11):
#   make quickstart   set up, then run the Fashion-MNIST quickstart → results/quickstart/*.pdf
#   make test         set up, then run the test suite
#   make mutation     mutation-test the core modules (≈ 20 min on 2 cores; not part of CI)
# Both are idempotent: a second call installs nothing and rebuilds nothing.

VENV   := .venv
PYTHON ?= python3
# what a bare Debian lacks to build FFCV and the venv, and Fashion-MNIST (downloaded when absent)
APT    := build-essential python3-dev python3-venv libopencv-dev libturbojpeg0-dev pkg-config dataset-fashion-mnist
# what the tests need beside it: a real browser opens the report (tests/test_workflow.py)
TEST_APT := chromium
SUDO   := $(if $(filter 0,$(shell id -u 2>/dev/null)),,sudo)

.PHONY: setup system-packages quickstart test mutation report clean-results

quickstart: setup
	$(VENV)/bin/snakemake --cores all quickstart

# Four pytest processes (pytest-xdist) on two cores, each taking whole test files, longest first
# (tests/conftest.py): two of them spend most of their time waiting on the Slurm cluster's status
# checks (tests/test_slurm*.py), the other two keep the cores busy. Whole files: the tests of one
# file may share a module fixture (a workflow checkout). (--dist loadgroup would be finer, but
# with pytest 9.2 it silently groups nothing: pytest-xdist issue 1386.) --no-loadscope-reorder
# keeps that order (xdist would otherwise start with the files that have the most tests).
TEST_PROCESSES ?= 4
test: setup
	@$(MAKE) --no-print-directory system-packages APT="$(TEST_APT)"
	$(VENV)/bin/pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

# Mutants of the core modules against their fast tests (config: [tool.mutmut] in pyproject.toml,
# test selection: MUTATION_TESTS in tests/conftest.py). Results stay in mutants/: a second run
# checks only what changed. The score per module is printed at the end. MUTANTS are checked in
# full; SAMPLED on a fixed 1-in-SAMPLE sample (MODULE:K: 1 in K) — the modules whose tests train or
# convert (seconds per mutant), and figures and claims (hundreds of mutants, no target of their own).
# Everything: make mutation SAMPLE=1 SAMPLED="convbias.train … convbias.figures convbias.claims" (hours).
# Measured in BENCHMARKS.md "Mutation testing".
MUTMUT  := mutmut==3.8.1
JOBS    ?= 2
MUTANTS ?= convbias.stats* convbias.reinit* convbias.models* convbias.checkpoints* convbias.verdicts* \
           convbias.data.variants* convbias.data.sources* convbias.data.dataset* convbias.data.downloads*
SAMPLED ?= convbias.train convbias.runs convbias.data.loaders convbias.data.transform convbias.data.convert \
           convbias.figures:4 convbias.claims:4
SAMPLE  ?= 20
mutation: setup
	@$(VENV)/bin/pip show -qq mutmut 2>/dev/null || $(VENV)/bin/pip install -qq $(MUTMUT)
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(JOBS) $(foreach m,$(MUTANTS),'$(m)')
	@names=$$($(VENV)/bin/python tools/mutation_score.py --sample $(SAMPLE) $(SAMPLED)); \
	if [ -n "$$names" ]; then OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(JOBS) $$names; fi
	$(VENV)/bin/python tools/mutation_score.py

report: quickstart
	$(VENV)/bin/snakemake --report results/quickstart/report.html quickstart
	@echo "the report is $(CURDIR)/results/quickstart/report.html: open it in a browser"

setup: system-packages $(VENV)/.installed

# Debian packages FFCV builds against, and Fashion-MNIST; installed only when one is missing.
# Elsewhere (no dpkg-query) nothing is installed: one sentence says what to install instead.
system-packages:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
		echo "not a Debian system, so make installs no system packages: install a C compiler, Python 3.11 with its headers and venv module, pkg-config and the development files of OpenCV and libjpeg-turbo with your package manager (or use the conda environment, README \"On a cluster without root\"); Fashion-MNIST is downloaded"; \
		exit 0; \
	fi; \
	missing=$$(for p in $(APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# pip byte-compiles what it installs one file after another; compileall does it on every core
# (89 -> 78 s for the whole install on 2 cores), and compiles src/ too: where PYTHONDONTWRITEBYTECODE
# is set (these machines), every job and test process would otherwise compile convbias again
# (~0.05-0.1 s each). Like pip, it leaves a file that does not compile (some packages ship such
# test data) to be read from source.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -qq --no-compile -r requirements.txt
	$(VENV)/bin/pip install -qq --no-deps -e .
	$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib src >/dev/null || true
	touch $@

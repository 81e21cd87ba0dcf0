# Two commands for a fresh Debian machine (Python 3.11):
#   make quickstart   set up, then run the Fashion-MNIST quickstart → results/quickstart/*.pdf
#   make test         set up, then run the test suite
# Both are idempotent: a second call installs nothing and rebuilds nothing.

VENV   := .venv
PYTHON ?= python3
APT    := libopencv-dev libturbojpeg0-dev pkg-config dataset-fashion-mnist
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup system-packages quickstart test report clean-results

quickstart: setup
	$(VENV)/bin/snakemake --cores all quickstart

test: setup
	$(VENV)/bin/pytest

report: quickstart
	$(VENV)/bin/snakemake --report results/quickstart/report.html quickstart

setup: system-packages $(VENV)/.installed

# Debian packages FFCV builds against, and Fashion-MNIST; installed only when one is missing.
system-packages:
	@missing=$$(for p in $(APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -qq -r requirements.txt
	$(VENV)/bin/pip install -qq --no-deps -e .
	touch $@

# The two commands of bloodlib (see README.md):
#   make reports   create .venv, install, register the Jupyter kernel, fetch data, render every report (cpu profile)
#   make test      same environment, run the test suite
#   make check-reports   open reports/$(PROFILE)/index.html and every report in headless Chromium (console errors,
#                 images, links, tables) and save screenshots in reports/$(PROFILE)/screenshots/
#   make check-claims   after make reports: every number of README.md's results tables against the
#                  rendered reports/<profile>/*/metrics.json (bloodlib.report.claims); fails on any mismatch
# Options: PROFILE=quick|cpu|paper, JOBS=N, PYTHON=python3.11, BLOODLIB_DATA=/path/to/local/data
#   MODELS=FILE   make reports first imports this model bundle (`bloodlib models export FILE --profile cpu` makes one),
#                 so that no model is trained: make reports MODELS=bloodlib-models-cpu.tar.gz
#   PYTEST_ARGS   extra pytest arguments for make test, e.g. the fast loop without notebooks and training:
#                 make test PYTEST_ARGS='-m "not slow"'    or one file: make test PYTEST_ARGS='tests/test_params.py -x'

PYTHON ?= python3
PROFILE ?= cpu
JOBS ?= 1
MODELS ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bloodlib-installed

.PHONY: reports test lint env data clean-reports lab bench check-reports check-claims

reports: data
	$(if $(MODELS),$(PY) -m bloodlib models import "$(MODELS)")
	$(PY) -m bloodlib report --profile $(PROFILE) --jobs $(JOBS)

check-reports: env
	$(PY) -m bloodlib.report.browser --profile $(PROFILE)

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

check-claims: env
	$(PY) -m bloodlib.report.claims README.md

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	$(PY) -m bloodlib kernel  # kernel.json carries the compute environment (bloodlib.runtime)
	@touch $(STAMP)

data: env
	$(PY) -m bloodlib data fetch --all

bench: env
	$(PY) bench/pipeline_speed.py --profile $(PROFILE)

lab: env
	$(VENV)/bin/jupyter lab notebooks/

clean-reports:
	rm -rf reports/quick reports/cpu reports/paper reports/interactive

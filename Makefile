# The two commands of the README's quick start: `make demo` and `make test` (`make test-fast`: the inner loop).
# Both create .venv when missing and install the pinned set (constraints.txt) first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.semcolor-installed
# CPU build by default (on this project's machines it is a local wheel). GPU users:
#   make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
# the training seeds `make claims` adds to the default stages' seed 0 (>= 3 seeds in all)
CLAIM_SEEDS ?= [1,2]

export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1
# dvc.yaml commands say `python`: make it the project's interpreter
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo claims test test-fast bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "semcolor needs Python 3.11, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt "torch==2.13.0" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

# The whole pipeline on the default params (the synthetic world), one Prefect server for all stages, then
# each evaluated model's champion alias by the retrain flow's rule (models:/<name>@champion resolves).
demo: install
	$(BIN)/python -m pipeline.prefect_server -- $(BIN)/dvc repro
	$(BIN)/python -m pipeline.champions
	@echo "report: reports/report.md   claims: metrics/claims.json   MLflow UI: $(BIN)/mlflow ui"
	@echo "next: source $(BIN)/activate   (then dvc, semcolor and mlflow are the project's; see README)"

# The claims over three training seeds: the demo's seed 0 plus CLAIM_SEEDS, through DVC (matrix stages
# train_*_seed@<seed>-<variant> and evaluate_seed@<seed>; dvc exp run keeps the override in params.yaml).
claims: install
	$(BIN)/python -m pipeline.prefect_server -- $(BIN)/dvc exp run -S 'claims.extra_seeds=$(CLAIM_SEEDS)'
	@echo "claims over seeds 0 + $(CLAIM_SEEDS): metrics/claims.json   report: reports/report.md"

# the whole offline suite, slow and server tests included (CI: .ci/run); the 25 slowest tests are listed.
# TEST_WORKERS pytest-xdist processes, one test file (or shared session fixture, tests/conftest.py) each at a
# time; TEST_WORKERS=0 runs in this one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)

# the inner loop: the tests not marked slow or server (pure library tests, a few minutes). The marker rule
# (pyproject.toml): a test whose call takes over 5 s here is marked slow; the suite lists any that is not.
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not server" --durations=10 $(PYTEST_ARGS)

bench: install
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)

# Two commands on a fresh machine (only Python 3.11 needed):
#   make demo   create .venv if missing, install, run the quick pipeline
#   make test   create .venv if missing, install, run unit tests + notebooks (nbval)
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: demo test install bench notebooks ablate clean-data

# The stamp is rebuilt whenever pyproject.toml changes, so a new dependency is installed.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m dhlib demo --profile $(PROFILE)

test: install
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider

# The ablation over b in {0, 0.5, 1} and the attention block off (re-run to resume).
ablate: install
	$(PY) -m dhlib ablate --profile $(PROFILE)

bench: install
	$(PY) benchmarks/bench_synthcity.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_metrics.py

# Re-execute every notebook top to bottom in quick mode and store the outputs.
notebooks: install
	$(PY) scripts/execute_notebooks.py notebooks/*.ipynb

clean-data:
	rm -rf data/synthcity runs/quick

# Two commands on a fresh machine (only Python 3.11, 3.12 or 3.13 needed):
#   make demo   create .venv if missing, install, run the quick pipeline
#   make test   create .venv if missing, install, run unit tests + notebooks (nbval)
#   make book   the course as an offline HTML book in book/_build/html/
#
# The interpreter that creates .venv: python3.11 when it runs, otherwise the first of
# python3.13, python3.12, python3 that runs and is 3.11-3.13. Every candidate is run, not just
# looked up: a pyenv shim for a version that is not installed is on the PATH but fails.
# Override with `make PYTHON=/path/to/python install` (it must be 3.11-3.13 too).
PY_PROBE   := import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13)
PYTHON_CANDIDATES ?= python3.11 python3.13 python3.12 python3
# Recursive (`?=`): probed only when a recipe needs it, and not at all when PYTHON is given.
PYTHON ?= $(shell for c in $(PYTHON_CANDIDATES); do \
            $$c -c '$(PY_PROBE)' >/dev/null 2>&1 && { echo $$c; break; }; done)
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: demo test install bench notebooks exercises book browser ablate clean-data pretrain flow finetune

# The stamp is rebuilt whenever pyproject.toml changes, so a new dependency is installed.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || { py='$(PYTHON)'; \
	  test -n "$$py" || { echo "error: no working Python 3.11, 3.12 or 3.13 found" \
	    "(tried: $(PYTHON_CANDIDATES)). Install one of them, or run" \
	    "'make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)'." >&2; exit 1; }; \
	  "$$py" -c '$(PY_PROBE)' >/dev/null 2>&1 || { echo "error: PYTHON=$$py does not run" \
	    "or is not Python 3.11, 3.12 or 3.13." >&2; exit 1; }; \
	  echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,book]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m dhlib demo --profile $(PROFILE)

test: install
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider

# Stage 1, the shipped closed-set segmenter weights/quick-closed-set.pt and its card, in two runs
# (about 2 h 45 min on 2 cores; re-run to resume either): from scratch with the decoder's skip at
# stride 4 (30 000 steps, the poly decay restarted at 20 000), then 6 000 steps at skip stride 2
# from its weights (the quick profile's pretrain_* defaults); then the file and its measured card.
# To start over, remove runs/quick-pretrain-ext and runs/quick-pretrain-s2 first. The shipped
# file was trained in float32, before training steps used bf16 on CPUs with it in hardware:
# amp=false repeats that on every machine.
PRETRAIN_STRIDE4 = --set skip_stride=4 --set pretrain_init=none --set pretrain_steps=30000 \
	--set pretrain_restarts=20000, --set pretrain_lr=1.5e-3 --set val_every=2500 \
	--set pretrain_dir=runs/quick-pretrain-ext
pretrain: install
	$(PY) -m dhlib pretrain --profile quick --resume --set amp=false $(PRETRAIN_STRIDE4)
	$(PY) -m dhlib pretrain --profile quick --resume --set amp=false
	$(PY) -m dhlib ship-weights quick-closed-set --profile quick

# The flow that stage 2's joint phase starts from, weights/quick-flow.pt: train-flow on inlier
# crops (the quick profile's flow_pretrain_steps; re-run to resume), then the file and its card.
flow: install
	$(PY) -m dhlib train-flow --profile quick --resume --set runs_dir=runs/quick-flow
	$(PY) -m dhlib ship-weights quick-flow --profile quick --set runs_dir=runs/quick-flow

# Stage 2, the shipped two-head model weights/quick-densehybrid.pt: the demo's fine-tuning from
# the shipped closed-set weights and flow, then the file and its card (metrics, score threshold).
finetune: install
	$(PY) -m dhlib demo --profile quick
	$(PY) -m dhlib ship-weights quick-densehybrid --profile quick

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

# Self-checking exercises (otter-grader): `otter assign` on every notebook with an
# '# ASSIGNMENT CONFIG' cell -> exercises/student/ (committed) and exercises/autograder/ (ignored).
exercises: install
	$(PY) scripts/make_exercises.py

# The course as a static HTML book from the stored notebooks, the README and docs/ (nothing is
# executed; npm fetches the pinned MathJax once). Open it with
#   python -m http.server -d book/_build/html     (then http://localhost:8000)
book: install
	$(PY) scripts/build_book.py

# Debian's chromium and chromium-driver (and npm) for the book's browser test; CI runs this
# before `make test`. Needs root or sudo; without them the browser test skips and says why.
browser:
	bash scripts/install_browser.sh

clean-data:
	rm -rf data/synthcity runs/quick

# Two commands: `make run` (main job on the bundled data) and `make test`.
# Both create .venv in the checkout and install the package with all its dependencies.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install browser bench bench-quick bench-sweep clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "walkforward needs Python 3.11 ($(PYTHON) not found; set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m backtest.warmup
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/walkforward run configs/default.toml --out runs

# The browser tests open pages in headless Chromium (Debian's package; installed once, as root or with sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; }
	@command -v chromium >/dev/null 2>&1 || { echo "make browser: could not install Debian's chromium package"; exit 2; }

test: $(STAMP) browser
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q

# Issue 9's reference workload, every arm (tutorial loop, engine, fastest engine, all five types): one table,
# figures in bench/results.json. `make bench-quick`: the first 8 folds (a smoke run, not the figures).
bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python bench/walkforward.py
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python bench/sweep_study.py

# Issue 21's sweep study alone (arms a, b, c; README "Model selection"); `--quick` for a smoke run.
bench-sweep: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python bench/sweep_study.py

bench-quick: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python bench/walkforward.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache

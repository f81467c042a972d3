# The two commands a new user needs: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest bench clean install

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "script-ec2 needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# An editable install leaves our own modules uncompiled, and with PYTHONDONTWRITEBYTECODE set
# every command would compile them again (~0.05 s a start); compile them as a wheel install would.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m compileall -q script_ec2
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/script-ec2 demo run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest

test: lint typecheck pytest

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

# A report, not a gate: one table of figures, and bench/results.json (a few minutes).
bench: $(BENCH_STAMP)
	$(PY) -m compileall -q script_ec2
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

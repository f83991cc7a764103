# The two commands: `make run` (the whole system, embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-faults lint bench install clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The sandbox's Python packages (config.json's sandbox.packages), apart from the project's own.
SANDBOX_STAMP := .sandbox/.installed
$(SANDBOX_STAMP): config.json $(STAMP)
	$(PY) -m openclaw_site.sandbox_env

install: $(STAMP) $(SANDBOX_STAMP)

# A local run: plain HTTP on this machine and a secret key generated into var/ (openclaw_site/settings.py).
run: export OPENCLAW_DEV ?= 1
run: $(STAMP) $(SANDBOX_STAMP)
	$(PY) manage.py serve

test-faults: $(STAMP)
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

test: $(STAMP) $(SANDBOX_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var/ .pytest_cache

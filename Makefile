# The two commands: `make run` (the whole system, embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The sandbox's own Python environment (pools/sandbox_python.py): config's sandbox.packages at the
# versions of sandbox-requirements.txt. SANDBOX_PYTHON picks its interpreter (default: the system's
# /usr/bin/python3 when it can, so the sandbox's unprivileged user can read it).
SANDBOX_VENV := .venv-sandbox
SANDBOX_STAMP := $(SANDBOX_VENV)/.installed
SANDBOX_PYTHON ?=

.PHONY: run test test-faults lint bench bench-peers install clean

PEERS_VENV := .venv-peers
PEERS_PY := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.installed

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

$(SANDBOX_STAMP): sandbox-requirements.txt config.json pools/sandbox_python.py | $(STAMP)
	$(PY) -m pools.sandbox_python $(SANDBOX_VENV) $(if $(SANDBOX_PYTHON),--python $(SANDBOX_PYTHON))
	touch $(SANDBOX_STAMP)

install: $(STAMP) $(SANDBOX_STAMP)

# A local run: plain HTTP on this machine and a secret key generated into var/ (openclaw_site/settings.py).
run: export OPENCLAW_DEV ?= 1
run: install
	$(PY) manage.py serve

test-faults: install
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m bench $(BENCH_ARGS)

# LangGraph side by side with the engine (bench/peers.py). The peers live in a venv of their own:
# the product's requirements.txt plus bench/requirements-peers.txt.
$(PEERS_STAMP): requirements.txt bench/requirements-peers.txt
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install --quiet --upgrade pip
	$(PEERS_PY) -m pip install --quiet -r requirements.txt -r bench/requirements-peers.txt
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)
	$(PEERS_PY) -m bench peers $(BENCH_ARGS)

clean:
	rm -rf var/ .pytest_cache

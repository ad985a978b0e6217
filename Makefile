# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; an unpinned torch pulls a multi-GB CUDA build. Override for a GPU machine.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/python examples/demo.py

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/pull.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/job_latency.py

clean:
	rm -rf $(VENV) .pytest_cache

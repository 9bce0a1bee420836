# Two commands set everything up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q

.PHONY: demo test bench install clean

# Two stamps: the demo needs the core package only (no extras: a lighter, faster install); the tests need the
# dev extra. The dev install includes the core one, so `make test` then `make demo` installs nothing more, and
# `make demo` then `make test` adds the dev extra.
$(VENV)/.core: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@ $(VENV)/.core

install: $(VENV)/.dev

demo: $(VENV)/.core
	$(VENV)/bin/starlight demo --force  # a rerun rewrites demo-out/ and answers from the registry

test: $(VENV)/.dev
	$(PY) -m pytest -q

bench: $(VENV)/.dev
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .starlight demo-out .pytest_cache

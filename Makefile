# Two commands set everything up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q

.PHONY: demo test test-fast docs bench results install clean

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

# The suite runs on TEST_WORKERS pytest-xdist workers, one test file per worker at a time (--dist loadfile, so a
# module's shared fixtures are built once), one torch thread each (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: $(VENV)/.dev
	$(PY) -m pytest -q $(XDIST)

# The contributor's loop: every module imported and exercised, the end-to-end tests (marked `slow`) left out.
test-fast: $(VENV)/.dev
	$(PY) -m pytest -q $(XDIST) -m "not slow"

# docs/cli.md from each command's --help (tests/test_docs.py fails when it is stale).
docs: $(VENV)/.core
	$(PY) scripts/commands_doc.py

bench: $(VENV)/.dev
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# Every published table and figure of docs/results, regenerated from an empty registry of its own (about 52
# minutes on 2 cores; the instruments study, benchmarks/study_instruments.py, and the --realign-every study,
# benchmarks/study_realign_every.py (about 8 + 13 minutes loaded), run last in registries of their own). Order matters only for reuse: the anchors and t-sampling sweeps reuse width-mnist1d's models,
# renorm-mnist1d reuses t-sampling-mnist1d's uniform stars, width-mnist1d-cnn reuses anchors-mnist1d-cnn's width 32.
PUBLISHED := linear-toy-replicates linear-toy-replicates-solution linear-toy width-mnist1d anchors-mnist1d \
	t-sampling-mnist1d renorm-mnist1d anchors-mnist1d-cnn width-mnist1d-cnn
RESULTS_HOME ?= .starlight-results

results: $(VENV)/.core
	for s in $(PUBLISHED); do \
		$(VENV)/bin/starlight --home $(RESULTS_HOME) sweep $$s --out docs/results/$$s --force --jobs 2 || exit 1; \
		rm -f docs/results/$$s/results.json; \
	done
	OMP_NUM_THREADS=1 $(PY) benchmarks/study_instruments.py --home $(RESULTS_HOME)-instruments \
		--out docs/results/instruments-on-the-star
	OMP_NUM_THREADS=1 $(PY) benchmarks/study_instruments.py --home $(RESULTS_HOME)-instruments-30 --epochs 30 \
		--out docs/results/instruments-on-the-star-30-epochs
	OMP_NUM_THREADS=1 $(PY) benchmarks/study_realign_every.py --home $(RESULTS_HOME)-realign-every \
		--out docs/results/realign-every
	OMP_NUM_THREADS=1 $(PY) benchmarks/study_realign_every.py --home $(RESULTS_HOME)-realign-every-400 --epochs 400 \
		--replicates 3 --out docs/results/realign-every-400-epochs

clean:
	rm -rf $(VENV) .starlight .starlight-results .starlight-results-instruments .starlight-results-instruments-30 \
		.starlight-results-realign-every .starlight-results-realign-every-400 demo-out .pytest_cache

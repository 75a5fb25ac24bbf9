# Every target sets up what it needs: a virtual environment in .venv with the
# package (editable) and its development dependencies, and the generated code.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GENERATED := authz/_proto/envoy/service/auth/v3/external_auth_pb2.py

.PHONY: all setup proto test lint typecheck unit demo check-config fuzz bench clean

all: test

setup: $(STAMP) $(GENERATED)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(GENERATED): $(STAMP) $(PROTOS) protos/compile_protos.py
	$(BIN)/python protos/compile_protos.py >/dev/null
	touch $@

proto: $(STAMP)
	$(BIN)/python protos/compile_protos.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# The README's test command: lint, types, then the whole suite (unit, service,
# security, end to end with the real Envoy binary).
test: lint typecheck
	$(BIN)/pytest -q

# A long property-testing campaign over request parsing, credentials and
# verification; prints how many inputs each property was tried with.
FUZZ_EXAMPLES ?= 20000
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/security/test_fuzz.py \
		-q -p no:cacheprovider --hypothesis-show-statistics

# Side by side through Envoy to a direct response: no auth, Envoy's jwt_authn, a bare
# grpc.aio allow-all floor, authz with one token and with a distinct token per request.
# Prints the table and the issue 6 targets; writes bench-results/ and docs/bench.{md,png}.
# BENCH_SECONDS (10) per measured run; see `python -m tests.bench.run --help`.
bench: setup
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m tests.bench.run

# Runs Envoy + authz + a sample upstream on loopback and shows decisions.
demo: setup
	$(BIN)/python -m authz.dev.demo

check-config: setup
	$(BIN)/authz check-config $(CONFIG)

clean:
	rm -rf $(VENV) authz/_proto build *.egg-info .pytest_cache .mypy_cache .ruff_cache .demo .hypothesis bench-results

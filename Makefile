# Every target sets up what it needs: a virtual environment in .venv with the
# package (editable) and its development dependencies. The code generated from
# protos/ is committed (authz/_proto); `make proto` regenerates it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' authz/__init__.py)
# The tag k8s/ deploys (its kustomizations' images: newTag); push it to your
# registry with IMAGE=registry.example.com/authz:$(VERSION).
IMAGE ?= authz:$(VERSION)

.PHONY: all setup tools engine test-base proto lock sbom test lint typecheck demo check-config fuzz soak image clean bench bench-check

all: test

setup: $(STAMP)

# xds-protos (Envoy's upstream protos) serves the proto cross-check only; it
# goes to its own folder because it ships its own, older opentelemetry.proto
# modules, which would shadow opentelemetry-proto's in site-packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/xds-protos 'xds-protos>=1.70'
	touch $@

# Regenerates authz/_proto from protos/ (commit the result; a test checks it is
# current).
proto: $(STAMP)
	$(BIN)/python protos/compile_protos.py

# The image's dependencies, pinned with hashes, for CPython 3.12 (the
# Dockerfile's base) on any platform; a test checks the lock still satisfies
# pyproject.toml.
lock: $(STAMP)
	command -v $(BIN)/uv >/dev/null || $(BIN)/pip install --quiet 'uv>=0.9'
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.12 \
		--no-header --quiet -o requirements.lock

# The software bill of materials of the image's Python dependencies: exactly
# what requirements.lock pins (the image installs nothing else), as CycloneDX
# JSON, by the CycloneDX project's own generator.
SBOM ?= sbom.cdx.json
sbom: $(STAMP)
	$(BIN)/cyclonedx-py requirements requirements.lock --pyproject pyproject.toml \
		--output-reproducible --of JSON -o $(SBOM)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# Prometheus's server and promtool, from Debian's `prometheus` package: the
# alert rules' unit tests and the end-to-end scrape (tests/observability); wrk,
# the load of the overload test (and of make bench and make soak); redis-server,
# the shared DPoP replay store's tests (tests/unit/check/test_replay.py).
tools:
	command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v wrk >/dev/null && \
		command -v redis-server >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus wrk redis-server)

# Docker's engine, from Debian's docker.io: the image tests build the Dockerfile
# and run the image (tests/deploy/test_image.py); and debootstrap, with which
# they make their base image from Debian's packages, needing no image registry.
# Unless an engine answers already, dockerd starts in the background
# (DOCKERD, with its flags; its log: DOCKERD_LOG), and this waits until
# `docker info` answers: at most DOCKERD_WAIT seconds, then it fails with the
# end of that log; at once if no dockerd runs any more. While another dockerd
# runs (one that docker.io's init script started, say), it waits for that one.
DOCKERD ?= dockerd
DOCKERD_LOG ?= /tmp/authz-dockerd.log
DOCKERD_WAIT ?= 60
engine:
	command -v dockerd >/dev/null && command -v docker >/dev/null && command -v debootstrap >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io debootstrap)
	@docker info >/dev/null 2>&1 || { \
		echo "starting dockerd (log: $(DOCKERD_LOG))"; \
		nohup $(DOCKERD) >>$(DOCKERD_LOG) 2>&1 </dev/null & pid=$$!; \
		deadline=$$(( $$(date +%s) + $(DOCKERD_WAIT) )); \
		until docker info >/dev/null 2>&1; do \
			if [ $$(date +%s) -ge $$deadline ] || { ! kill -0 $$pid 2>/dev/null && ! pgrep -x dockerd >/dev/null; }; then \
				echo "dockerd did not come up: it exited, or docker info still failed after $(DOCKERD_WAIT) s; the end of $(DOCKERD_LOG):" >&2; \
				tail -n 30 $(DOCKERD_LOG) >&2; exit 1; \
			fi; \
			sleep 0.2; \
		done; }

# The image tests' base image (tests/deploy/image_base.py, standard library
# only), started in the background so that bootstrapping it (a minute or two,
# once: it is kept) runs beside the venv's setup, lint and type checks; the
# tests wait for it, or build it themselves.
TEST_BASE_LOG ?= /tmp/authz-test-base.log
test-base: engine
	nohup $(PYTHON) -m tests.deploy.image_base >>$(TEST_BASE_LOG) 2>&1 </dev/null &

# The README's test command: lint, types, then the whole suite (unit, service,
# security, end to end with the real Envoy binary and the real Prometheus, the
# image built and run on the container engine).
test: test-base lint typecheck tools
	DOCKERD_LOG=$(DOCKERD_LOG) $(BIN)/pytest -q

# A long property-testing campaign over request parsing, credentials,
# verification and DPoP proofs; prints how many inputs each property was tried with.
FUZZ_EXAMPLES ?= 20000
# Then the differential tests of paths and hosts through the real Envoy, with
# FUZZ_EXAMPLES generated requests of each (EDGE_SEED picks another sample).
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/security/test_fuzz.py \
		tests/security/test_fuzz_dpop.py -q -p no:cacheprovider --hypothesis-show-statistics
	EDGE_CASES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/e2e/test_edge_paths.py -q -s -p no:cacheprovider

# Envoy + authz at saturation for SOAK_SECONDS with valid and invalid tokens;
# checks every answer, audit records = checks, flat memory. Installs wrk.
SOAK_SECONDS ?= 60
soak: setup
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m tests.soak.soak --seconds $(SOAK_SECONDS)
# Side by side through Envoy to a direct response: no auth, Envoy's jwt_authn, bare
# allow-all floors, authz with one token, with a distinct token per request, and with a
# DPoP-bound token and a fresh proof per request (its proofs minted before each run).
# Prints the table and the speed targets; writes bench-results/ and docs/bench.{md,png}.
# BENCH_SECONDS (10) per measured run, BENCH_VARIANTS (e.g. d,f) picks some; see
# `python -m tests.bench.run --help`.
bench: setup
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m tests.bench.run

# Runs Envoy + authz + a sample upstream on loopback and shows decisions.
demo: setup
	$(BIN)/python -m authz.dev.demo

# Not part of `make test`: how much Python a warm Check runs, part by part (exact
# counts, tests/bench/interpreter_work.py); where a Check's time goes, cost by
# cost, against the floor (tests/bench/attribution.py); what observability costs
# a Check (tracing off vs on); the cold verification path against the raw
# signature check; what the speed shortcuts still save; a DPoP Check beside a
# bearer Check; and what each size of the gRPC worker pool costs, through Envoy
# (tests/bench/pool_sweep.py; POOL_SIZES, default 1,2,4,8,16).
POOL_SIZES ?= 1,2,4,8,16
bench-check: setup
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m tests.bench.interpreter_work
	$(BIN)/python -m tests.bench.attribution
	$(BIN)/python -m tests.bench.bench_check
	$(BIN)/python -m tests.bench.verify_cost
	$(BIN)/python -m tests.bench.shortcuts
	$(BIN)/python -m tests.bench.dpop_cost
	$(BIN)/python -m tests.bench.pool_sweep --sizes $(POOL_SIZES)

# The container image (Dockerfile); needs a container engine, not the venv. Its
# OCI labels say which version and commit it was built from ("-dirty": with
# uncommitted changes), and, with SOURCE=https://..., where that is published.
# BASE_IMAGE=python:3.12-slim@sha256:... pins the base image by digest.
REVISION ?= $(shell git describe --always --dirty --abbrev=40 --exclude='*' 2>/dev/null)
SOURCE ?=
BASE_IMAGE ?=
IMAGE_BUILD_ARGS = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	$(if $(SOURCE),--build-arg SOURCE=$(SOURCE)) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE))
image:
	docker build $(strip $(IMAGE_BUILD_ARGS)) -t $(IMAGE) .

check-config: setup
	$(BIN)/authz check-config $(CONFIG)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .demo .hypothesis bench-results

# One place for the project's commands. `make install` is idempotent: it reinstalls only when
# pyproject.toml changed since the last install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= serve,train,dev
export ARTIFACTS_DIR ?= artifacts
# The embedded default `make run` trains when its bundle is missing; the service itself serves
# every model under ARTIFACTS_DIR (MODEL_NAME=*), or what MODEL_NAME in the environment says.
DEFAULT_BUNDLE ?= iris

.PHONY: install test-tools docs run train test test-fast lint format proto bench bench-quality harden clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

## Train the default model when no bundle exists, then serve it.
run: install
	@$(PY) -c "import bundle, os, sys; sys.exit(0 if bundle.list_versions(bundle.model_dir(os.environ['ARTIFACTS_DIR'], '$(DEFAULT_BUNDLE)')) else 1)" \
		|| $(PY) -m training
	$(PY) -m service

train: install
	$(PY) -m training

## The Debian packages the tests drive, installed as root when missing: Chromium and
## ChromeDriver (the model page's tests, tests/page, and its benchmark), curl and openssl (the
## documentation's examples, tests/docs). Elsewhere the browser tests skip (unless
## REQUIRE_BROWSER=1).
TEST_TOOLS := /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver /usr/bin/curl:curl /usr/bin/openssl:openssl
test-tools:
	@missing=$$(for t in $(TEST_TOOLS); do test -x $${t%%:*} || echo $${t#*:}; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 \
			|| { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1; } \
			|| echo "make test-tools: could not install" $$missing; \
		else echo "make test-tools: not installed (needs root and apt-get):" $$missing; fi; \
		if [ "$${REQUIRE_BROWSER:-}" = 1 ]; then \
			for t in $(TEST_TOOLS); do test -x $${t%%:*} || { echo "make test-tools: $${t%%:*} is missing and REQUIRE_BROWSER=1" >&2; exit 1; }; done; \
		fi; \
	fi

test: install test-tools
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not docker"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m service.settings_doc --check README.md

## Regenerate README.md's settings table from service/settings.py's Settings
## (tests/docs/test_settings_table.py fails while they differ).
docs: install
	$(PY) -m service.settings_doc --write README.md

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

## Regenerate the committed gRPC stubs (service/grpc_api/grpc_predict_v2_pb2*.py) from the .proto
## beside them, with the grpcio-tools of the dev extra (service/grpc_api/_generate.py says how).
proto: install
	$(PY) -m service.grpc_api._generate

## Load benchmark (bench/RESULTS.md): trains the Iris bundle if missing, installs wrk and h2load
## (nghttp2-client, for gRPC) and Chromium (the model page's load time) if it can.
bench: install test-tools
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get install -y -qq wrk >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; }; } \
		|| echo "wrk not installed: the benchmark uses its slower asyncio client"
	@command -v h2load >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get install -y -qq nghttp2-client >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nghttp2-client >/dev/null 2>&1; }; }; } \
		|| echo "h2load not installed: the gRPC loads use the slower Python client (bench/grpc_load.py)"
	$(PY) -m bench
	$(PY) -m bench.batch_predict
	$(PY) -m bench.page --screenshot docs/model-page.png

## Held-out quality on real tables with text and blanks, against HistGradientBoosting
## (bench/QUALITY.md).
bench-quality: install
	$(PY) -m bench.quality

## Hostile input, schemathesis, fuzzing, broken bundles, overload, shutdown and pip-audit, with
## figures (bounded: under 10 minutes). HARDEN_SEED=N replays a run.
harden: install
	$(PY) -m tests.hardening.harden

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

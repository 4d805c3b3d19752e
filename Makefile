# picchio — the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export PYTHONPATH := $(CURDIR):$(CURDIR)/e2e:$(CURDIR)/operator:$(PYTHONPATH)

.PHONY: deps test test-quick demo bench clean

# System packages (etcd; fuse3 for the power-loss file system) and the Python distribution with its test extras.
deps:
	@command -v etcd >/dev/null 2>&1 && command -v fusermount3 >/dev/null 2>&1 || { \
	  echo ">> installing etcd-server fuse3 (Debian)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server fuse3) >/dev/null; }
	@pkill -f '^/usr/bin/etcd$$' 2>/dev/null || true  # Debian's package may start a default instance
	@# promtool checks manifests/monitoring (tests/operator/test_monitoring.py): Debian's 2.42 installs in
	@# seconds; building cmd/promtool from its Go module would cost minutes of the CI budget on 2 cores
	@command -v promtool >/dev/null 2>&1 || { echo ">> installing prometheus (Debian, for promtool)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; }
	@$(PYTHON) -c "import logstore, picchio_harness, aetcd, boto3, obstore, grpc, isal, inotify_simple, rich, moto, mfusepy, pytest_asyncio, hypothesis, kopf, kubernetes, cryptography, matplotlib; import importlib.metadata as m; m.version(\"picchio\"); m.entry_points(group=\"picchio.dev\")[\"cluster\"]" 2>/dev/null || { \
	  echo ">> pip install -e .[test,operator] (the test and operator extras; minutes from an empty pip cache)"; \
	  $(PIP) install --progress-bar off -e '.[test,operator]'; }

# What the WAL needs and no more (Debian's etcd, the package without extras): `make demo` starts
# with this so that the first entry is appended before the test and operator extras are installed.
.PHONY: deps-core
deps-core:
	@command -v etcd >/dev/null 2>&1 || { echo ">> installing etcd-server (Debian)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >/dev/null; }
	@$(PYTHON) -c "import logstore, logstore.cli.main, logstore.dev.cli, aetcd, boto3, grpc, isal, inotify_simple, yaml; import importlib.metadata as m; m.version(\"picchio\")" 2>/dev/null || { \
	  echo ">> pip install -e ."; $(PIP) install -q -e .; }

-include e2e/cluster/components.mk
-include e2e/kind/kind.mk

# The whole suite on real components: unit, integration (etcd + MinIO), power cuts (FUSE),
# service (LogStore processes), the Kubernetes control plane.  Builds what is missing first
# (the `test` group: every component but the kind-only ones; a no-op when cached), so no
# test can run on a stand-in.
test: deps
	$(MAKE) --no-print-directory components ONLY=test
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

# Under 2 minutes, nothing built: unit tests and the tests on Debian's etcd, local storage, FUSE.
test-quick: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow and not cluster and not faults" tests

# Fault-injection suite, long form (issue 9; knobs in tests/faults/conftest.py): 200 randomized
# service-mode schedules and 100 SIGKILL cycles per embedded backend; `make test` runs the CI cut.
# Replay a failure with PICCHIO_FAULT_SEED=<seed printed> PICCHIO_FAULT_RUNS=1.
.PHONY: faults
faults: deps
	$(MAKE) components ONLY="etcd minio toxiproxy"
	PICCHIO_FAULT_RUNS=$${PICCHIO_FAULT_RUNS:-200} PICCHIO_FAULT_CYCLES=$${PICCHIO_FAULT_CYCLES:-100} \
	  $(PYTHON) -m pytest -q -p no:cacheprovider -m faults tests/faults

# A tour on real components, each step building only what it uses (with progress): the WAL on
# local disk first (Debian's etcd, or etcd 3.6 if cached: nothing to build), then S3 and
# service mode (MinIO), then the operator (control plane + kwok).  DEMO_STEPS="wal s3" stops early.
# The WAL steps need only `deps-core` (seconds to install); the operator step needs the extras
# (kopf, kubernetes, cryptography: minutes from an empty pip cache), installed when it is reached.
DEMO_STEPS ?= wal s3 operator
demo: deps-core
	$(if $(filter wal s3,$(DEMO_STEPS)),$(PYTHON) -m picchio_harness.demo $(filter wal s3,$(DEMO_STEPS)))
	$(if $(filter operator,$(DEMO_STEPS)),@$(MAKE) --no-print-directory deps && $(PYTHON) -m picchio_harness.demo operator)

bench: deps
	$(PYTHON) -m logstore.cli.main bench append --help

clean:
	rm -rf .pytest_cache build *.egg-info .demo

# The operator's figures (200 WoodpeckerLogs reconciled and collected, apply latency, RSS) on the
# local control plane: a benchmark, not part of `make test`; prints the figures as JSON.
.PHONY: bench-operator
bench-operator: deps
	$(MAKE) --no-print-directory components ONLY="cluster minio"
	@out=$$(mktemp); \
	PICCHIO_BENCH_JSON=$$out $(PYTHON) -m pytest -q -p no:cacheprovider tests/operator_cluster/bench_operator_figures.py \
	  && cat $$out && echo; rc=$$?; rm -f $$out; exit $$rc

# picchio beside the real Woodpecker v0.1.35 (issue 10): the interop suite alone (it is part of
# `make test` too), and the side-by-side benchmark (JSON: both figures and the ratio).
.PHONY: test-interop bench-compare
test-interop: deps
	$(MAKE) --no-print-directory components ONLY=interop
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/interop

bench-compare: deps
	$(MAKE) --no-print-directory components ONLY=interop
	$(PYTHON) -m picchio_harness.bench_compare

# picchio, the real Woodpecker v0.1.35 and Apache Kafka 4.x side by side (issue 12): JSON on stdout and a
# PNG chart.  Kafka's jars come from Maven Central (mvn, cached in ~/.cache/picchio/kafka-<version>; needs
# java, javac, mvn); never part of `make test`.  The defaults (3 rounds × 4 s per system and workload, 300
# tail entries): ≈ 14 min here; the long run: BENCH_ARGS="--seconds 10 --rounds 5 --tail-entries 1000"
# (≈ 35 min); a smoke run: BENCH_ARGS="--seconds 1 --rounds 2 --tail-entries 40" (≈ 8 min, mostly start-up).
PLOT ?= bench-peers.png
BENCH_ARGS ?=
.PHONY: bench-peers
bench-peers: deps
	@$(MAKE) --no-print-directory components ONLY=interop >&2  # stdout: the JSON only
	@$(PYTHON) -c "import matplotlib" 2>/dev/null || { echo ">> pip install -e .[bench] (matplotlib, for the chart)" >&2; \
	  $(PIP) install --progress-bar off -q -e '.[bench]' >&2; }
	@echo ">> $(PYTHON) -m picchio_harness.bench_peers --plot $(PLOT) $(BENCH_ARGS)" >&2
	@$(PYTHON) -m picchio_harness.bench_peers --plot $(PLOT) $(BENCH_ARGS)

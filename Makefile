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
	@$(PYTHON) -c "import logstore, picchio_harness, aetcd, boto3, grpc, isal, moto, mfusepy, pytest_asyncio, hypothesis, kopf, kubernetes, cryptography; import importlib.metadata as m; m.version(\"picchio\")" 2>/dev/null || { \
	  echo ">> pip install -e .[test,operator]"; \
	  $(PIP) install -q -e '.[test,operator]'; }

-include e2e/cluster/components.mk
-include e2e/kind/kind.mk

# The whole suite on real components: unit, integration (etcd + MinIO), power cuts (FUSE),
# service (LogStore processes), the Kubernetes control plane.  Builds what is missing first
# (`make components`: a no-op when cached), so no test can run on a stand-in.
test: deps components
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

# A short tour on real components: etcd + S3 on loopback, one log, every verb.
demo: deps components
	$(PYTHON) -m picchio_harness.demo
	$(PYTHON) -m picchio_harness.demo_cluster

bench: deps
	$(PYTHON) -m logstore.cli.main bench append --help

clean:
	rm -rf .pytest_cache build *.egg-info .demo

# The operator's figures (200 WoodpeckerLogs reconciled and collected, apply latency, RSS) on the
# local control plane: a benchmark, not part of `make test`; prints the figures as JSON.
.PHONY: bench-operator
bench-operator: deps components
	@out=$$(mktemp); \
	PICCHIO_BENCH_JSON=$$out $(PYTHON) -m pytest -q -p no:cacheprovider tests/operator_cluster/bench_operator_figures.py \
	  && cat $$out && echo; rc=$$?; rm -f $$out; exit $$rc

# picchio — the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export PYTHONPATH := $(CURDIR):$(CURDIR)/e2e:$(CURDIR)/operator:$(PYTHONPATH)

.PHONY: deps test test-quick demo bench clean

# System packages (etcd) and the Python distribution with its test extras.
deps:
	@command -v etcd >/dev/null 2>&1 || { \
	  echo ">> installing etcd-server (Debian)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >/dev/null; }
	@pkill -f '^/usr/bin/etcd$$' 2>/dev/null || true  # Debian's package may start a default instance
	@$(PYTHON) -c "import logstore, picchio_harness, aetcd, boto3, grpc, isal, moto, pytest_asyncio, hypothesis, kopf, kubernetes, cryptography; import importlib.metadata as m; m.version(\"picchio\")" 2>/dev/null || { \
	  echo ">> pip install -e .[test,operator]"; \
	  $(PIP) install -q -e '.[test,operator]'; }

-include e2e/cluster/components.mk
-include e2e/kind/kind.mk

# The whole suite: unit, integration (real etcd + S3), and the cluster tier when built.
test: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

test-quick: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow and not cluster" tests

# A short tour on real components: etcd + S3 on loopback, one log, every verb.
demo: deps components
	$(PYTHON) -m picchio_harness.demo
	$(PYTHON) -m picchio_harness.demo_cluster

bench: deps
	$(PYTHON) -m logstore.cli.main bench append --help

clean:
	rm -rf .pytest_cache build *.egg-info .demo

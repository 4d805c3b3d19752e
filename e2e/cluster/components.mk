# Real components for the tests, built from their Go modules (pins in
# e2e/cluster/versions.env, wrapper modules in e2e/cluster/go/).  Included by
# the top-level Makefile.  Cold: 20-40 min on 2 cores; warm: a no-op.
#   make components                 # everything missing
#   make components ONLY=minio      # one component or group (kubernetes, cluster)

PICCHIO_COMPONENTS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
PICCHIO_E2E_DIR := $(patsubst %/,%,$(dir $(PICCHIO_COMPONENTS_DIR)))
PYTHON ?= python3

.PHONY: components components-list
components:
	PYTHONPATH=$(PICCHIO_E2E_DIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m picchio_harness.build $(foreach n,$(ONLY),--only $(n))

components-list:
	PYTHONPATH=$(PICCHIO_E2E_DIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m picchio_harness.build --list

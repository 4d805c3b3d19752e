# Offline kind e2e (e2e/kind/).  Included by the top-level Makefile.
#   make kind-image     # dockerd (if needed), Go components, base images, node image, project image
#   make e2e-kind       # + create the cluster from kind-config.yaml, check nodes/pods, load the images,
#                       #   run the e2e suite (pytest e2e/tests), delete the cluster; exit status = pytest's
#   make kind-smoke     # the same without the suite (cluster checks only)
#   E2E_PYTEST_ARGS="-k scale" make e2e-kind   # extra pytest arguments
#   make dockerd-start / dockerd-stop
# Cold on 2 cores: see e2e/kind/README.md; warm: the images are cached in the local docker.
PICCHIO_KIND_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

.PHONY: kind-image e2e-kind kind-smoke dockerd-start dockerd-stop
kind-image:
	@started=0; $(PICCHIO_KIND_DIR)/dockerd.sh status >/dev/null 2>&1 || { $(PICCHIO_KIND_DIR)/dockerd.sh start && started=1; }; \
	rc=0; \
	PYTHONPATH=$(PICCHIO_KIND_DIR)/..$${PYTHONPATH:+:$$PYTHONPATH} nice -n 10 $(or $(PYTHON),python3) -m picchio_harness.build --only kind && \
	$(PICCHIO_KIND_DIR)/base-images.sh && nice -n 10 $(PICCHIO_KIND_DIR)/node-image.sh && nice -n 10 $(PICCHIO_KIND_DIR)/project-image.sh || rc=$$?; \
	[ $$started = 0 ] || $(PICCHIO_KIND_DIR)/dockerd.sh stop; exit $$rc

e2e-kind:
	E2E_SUITE=1 PYTEST_ARGS="$(E2E_PYTEST_ARGS)" $(PICCHIO_KIND_DIR)/e2e-kind.sh

kind-smoke:
	E2E_SUITE=0 $(PICCHIO_KIND_DIR)/e2e-kind.sh

dockerd-start:
	$(PICCHIO_KIND_DIR)/dockerd.sh start

dockerd-stop:
	$(PICCHIO_KIND_DIR)/dockerd.sh stop

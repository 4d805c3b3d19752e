# picchio: the LogStore server and the operator in one image.
#
#   docker build -t picchio .                                # public python:3.11-slim + PyPI
#   docker run picchio logstore serve ...                    # (the default command)
#   docker run picchio operator run ...
#
# Offline (no registry, no PyPI in the build): e2e/kind/project-image.sh builds
# the base from a debootstrap rootfs (local/python:3.11-bookworm: Debian's
# python3 is 3.11) and a wheelhouse on the host, then runs
#   docker build --network none --build-arg BASE_IMAGE=local/python:3.11-bookworm .
# When ./.wheelhouse/ exists, pip installs from it only (--no-index).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# ".wheelhous[e]" matches the directory when it exists and nothing otherwise,
# so the same Dockerfile serves online builds (no wheelhouse) and offline ones.
COPY pyproject.toml .wheelhous[e] /tmp/wheelhouse/
COPY pyproject.toml /src/pyproject.toml
COPY logstore /src/logstore
COPY operator/picchio_operator /src/operator/picchio_operator
COPY e2e/picchio_harness /src/e2e/picchio_harness

# A venv: Debian's python3 refuses system-wide pip installs (PEP 668), and
# python:3.11-slim is happy either way.
RUN set -eu; \
    python3 -m venv /opt/picchio; \
    if ls /tmp/wheelhouse/*.whl >/dev/null 2>&1; then \
      set -- --no-index --find-links /tmp/wheelhouse; \
    else \
      set --; \
    fi; \
    /opt/picchio/bin/pip install --no-cache-dir --disable-pip-version-check "$@" "/src[operator]"; \
    rm -rf /tmp/wheelhouse /src; \
    /opt/picchio/bin/picchio --help >/dev/null

ENV PATH=/opt/picchio/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["picchio"]
CMD ["logstore", "serve"]

# syntax=docker/dockerfile:1
#
# distill-guard, the ext_authz sidecar image. Build, push and run: docs/deploy.md.
#
#   docker build -t REGISTRY/distill-guard:0.1.0 \
#       --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE_URL=https://... .
#
# Two stages on the same base: the builder makes a virtualenv in /opt/venv from the
# hash-locked requirements.lock, then adds the project with --no-deps; the runtime
# stage copies only that venv. tests/test_dockerfile.py runs the builder's RUN
# commands as written here (in a temporary venv) and checks the rest of this file.
#
# The base is pinned by its exact tag. A tag can be re-pushed (Debian security
# rebuilds reuse it), so release builds should pin the digest as well:
#   docker buildx imagetools inspect python:3.11.16-slim-bookworm   # "Digest: sha256:..."
# then build with
#   --build-arg PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:<that digest>
# (the digest of the multi-platform index, so amd64 and arm64 builds both match).
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm

# ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV VENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when the lock changes.
# Every file is checked against the lock's sha256; wheels only, since the slim base has
# no compiler (every pin ships manylinux wheels for amd64 and arm64).
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "$VENV" \
    && "$VENV/bin/pip" install --no-compile --require-hashes --only-binary=:all: \
        -r requirements.lock

# The project: setup.py compiles protos/ with the grpcio-tools pinned in pyproject's
# build-system (in pip's isolated build environment, which is not part of the image);
# the data files (the Envoy bootstrap, the demo GeoIP source) land under $VENV/share.
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY protos ./protos
COPY authz ./authz
COPY envoy/sidecar.yaml ./envoy/sidecar.yaml
COPY geo/demo.csv ./geo/demo.csv
RUN --mount=type=cache,target=/root/.cache/pip \
    "$VENV/bin/pip" install --no-compile --no-deps . \
    && "$VENV/bin/python" -m compileall -q -f --invalidation-mode unchecked-hash "$VENV/lib" \
    && "$VENV/bin/distill-guard" --version

# ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=https://example.invalid/distill-guard
LABEL org.opencontainers.image.title="distill-guard" \
      org.opencontainers.image.description="Envoy ext_authz (v3, gRPC) service governing access to an AI model API against adversarial distillation" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Nothing is written at run time: bytecode is compiled here, for the venv (builder)
# and for the standard library, whose .pyc files the official image deletes; with
# unchecked-hash .pyc files Python never tries to rewrite them on a read-only root.
RUN python -m compileall -q -f --invalidation-mode unchecked-hash \
        "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \
    && groupadd --system --gid 10001 distill-guard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin distill-guard

# Owned by root and read-only for the service user: the process cannot change its code.
COPY --from=builder /opt/venv /opt/venv

# Listen on every interface: `docker run -p 9191:9191` and Kubernetes gRPC probes
# (which connect to the pod IP, not to loopback) must reach the server. In a pod the
# NetworkPolicy keeps other pods off these ports (envoy/k8s/base/networkpolicy.yaml).
# The Admin API stays off unless a token is configured (docs/admin.md). Rules,
# accounts, stores and GeoIP databases have no defaults here: they are the
# deployment's to set (envoy/k8s/base/deployment.yaml).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    DISTILL_GUARD_LISTEN=0.0.0.0:9191 \
    DISTILL_GUARD_ADMIN_LISTEN=0.0.0.0:9192

USER 10001:10001
WORKDIR /tmp

# 9191: ext_authz and grpc.health.v1; 9192: the Admin API (only with a token).
EXPOSE 9191 9192

# For Docker and Compose; Kubernetes ignores it and uses the probes in the manifests.
# `distill-guard health` probes DISTILL_GUARD_LISTEN on loopback; exit 0 only when SERVING.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["distill-guard", "health"]

ENTRYPOINT ["distill-guard", "serve"]

# The authz image. Build it with `make image` (docker build -t authz:VERSION .).
#
# Stage "build" makes a virtual environment in /opt/authz: the dependencies
# exactly as requirements.lock pins them, every file checked against its hash
# (a build is reproducible, and a tampered package fails it), then the authz
# wheel itself, without resolving anything more. The final stage copies only
# that venv onto a fresh slim Python of the same version (a venv is tied to
# its interpreter's path): no compiler, no pip, no sources.
#
# The base is the official Python image by tag. For a reproducible build, pin
# it by digest (both stages use it):
#   make image BASE_IMAGE=python:3.12-slim@sha256:<digest>
# where <digest> is what `docker buildx imagetools inspect python:3.12-slim`
# reports today; renew it to take the base image's security fixes.
#
# No `# syntax=` line: the engine's own Dockerfile frontend reads this file, so
# BuildKit pulls no frontend image and a build needs no registry but the base's.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# .dockerignore admits only what the build needs.
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY authz/ authz/
# The venv has no pip of its own; the build stage's pip installs into it. pip
# byte-compiles everything, which matters: the root filesystem is read-only
# in Kubernetes, so Python could not write __pycache__ at run time.
RUN python -m venv --without-pip /opt/authz \
 && pip --python /opt/authz/bin/python install --require-hashes --no-deps -r requirements.lock \
 && pip --python /opt/authz/bin/python install --no-deps . \
 && /opt/authz/bin/python -c "import authz._proto.envoy.service.auth.v3.external_auth_pb2" \
 && /opt/authz/bin/authz --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="authz" \
      org.opencontainers.image.description="JWT authorization for Envoy (ext_authz v3 over gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0"
# pip is a build tool: nothing installs at run time. A fixed numeric user, so
# Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN python -m pip uninstall --yes --quiet pip \
 && groupadd --system --gid 10001 authz \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin authz
COPY --from=build /opt/authz /opt/authz
# The default command writes no file: no bytecode (compiled at build time;
# PYTHONDONTWRITEBYTECODE keeps Python from trying), no temporary files, logs
# and audit records on stdout/stderr. So it runs with a read-only root
# filesystem and no writable /tmp (docker run --read-only). Only `--workers N`
# above 1 with a metrics endpoint needs a small writable TMPDIR, where workers
# announce their metrics ports.
ENV PATH=/opt/authz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 9001 gRPC: Authorization/Check and grpc.health.v1.Health. 9464 the Prometheus
# scrape endpoint, where telemetry.metrics.listen enables it (the k8s/ config
# does). The configuration is mounted at /etc/authz/authz.yaml (a ConfigMap in
# k8s/).
EXPOSE 9001 9464
ENTRYPOINT ["authz"]
# One worker: `--workers auto` would start one per CPU the container sees,
# which is every CPU of the node where no CPU limit is set (64 processes, each
# fetching keys, on a 64-core node). Give more with the CPU to match:
# docker run ... authz serve -c /etc/authz/authz.yaml --workers 4
CMD ["serve", "-c", "/etc/authz/authz.yaml", "--workers", "1"]
# What the image is built from; `make image` passes all three (VERSION from
# authz/__init__.py, REVISION the commit, "-dirty" if the tree had changes,
# SOURCE if set: make image SOURCE=https://github.com/OWNER/REPO). Last, as
# REVISION changes with every commit: a step after it would never be cached.
ARG VERSION=""
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

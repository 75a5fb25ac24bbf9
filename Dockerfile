# syntax=docker/dockerfile:1
# The authz image. Build it with `make image` (docker build -t authz:VERSION .).
#
# Stage "build" makes a virtual environment in /opt/authz: the dependencies
# exactly as requirements.lock pins them, every file checked against its hash
# (a build is reproducible, and a tampered package fails it), then the authz
# wheel itself, without resolving anything more. The final stage copies only
# that venv onto a fresh slim Python of the same version (a venv is tied to
# its interpreter's path): no compiler, no pip, no sources.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# .dockerignore admits only what the build needs.
COPY pyproject.toml README.md requirements.lock ./
COPY authz/ authz/
# The venv has no pip of its own; the build stage's pip installs into it. pip
# byte-compiles everything, which matters: the root filesystem is read-only
# in Kubernetes, so Python could not write __pycache__ at run time.
RUN python -m venv --without-pip /opt/authz \
 && pip --python /opt/authz/bin/python install --require-hashes --no-deps -r requirements.lock \
 && pip --python /opt/authz/bin/python install --no-deps . \
 && /opt/authz/bin/python -c "import authz._proto.envoy.service.auth.v3.external_auth_pb2" \
 && /opt/authz/bin/authz --version

FROM ${PYTHON_IMAGE}
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
ENV PATH=/opt/authz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# gRPC: Authorization/Check and grpc.health.v1.Health. The configuration is
# mounted at /etc/authz/authz.yaml (a ConfigMap in k8s/).
EXPOSE 9001
ENTRYPOINT ["authz"]
CMD ["serve", "-c", "/etc/authz/authz.yaml"]

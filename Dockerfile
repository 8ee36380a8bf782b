# syntax=docker/dockerfile:1
# The operator image: optiinfra/coordinator:<version>.
#   docker build -t optiinfra/coordinator:0.1.0 .
# Both stages use the same pinned base, so the venv's interpreter link stays valid.
# (Pin the digest as well, python:3.11.13-slim-bookworm@sha256:..., when publishing.)
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: a wheel of the package, installed with its pinned dependencies into a venv --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m pip wheel --no-deps --wheel-dir /wheels .
# pip compiles the byte code at install time (the runtime root filesystem is read-only).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/pip uninstall --yes pip setuptools

# --- runtime: the venv only, no compilers, no pip, not root --------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="optiinfra-coordinator" \
      org.opencontainers.image.description="Kubernetes operator coordinating optimisation changes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# uid/gid 65532 ("nonroot"); no home or shell needed. The root filesystem can be read-only:
# the operator writes only to /tmp (an emptyDir in the Deployment).
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9090 9443
ENTRYPOINT ["coordinator"]
CMD ["run"]

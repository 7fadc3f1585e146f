# syntax=docker/dockerfile:1
# The gpu-rightsizer operator image.
#
#   docker build -t REGISTRY/gpu-rightsizer:0.1.0 .
#   docker run --rm REGISTRY/gpu-rightsizer:0.1.0 --help
#
# Stage 1 builds the wheel from this repository and installs it, with its dependencies, into a
# virtual environment; stage 2 copies only that environment onto the same slim Python base, so
# no compiler, pip cache or source tree ships. Both stages use the same base and the same
# environment path, so the environment's scripts find their interpreter.
# tests/e2e/test_helm_image.py runs this recipe without a container engine.

# The Python the project is tested with (pyproject: requires-python >= 3.11; CI runs 3.11).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels .
RUN python -m venv /opt/gpu-rightsizer \
    && /opt/gpu-rightsizer/bin/pip install /wheels/*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gpu-rightsizer" \
      org.opencontainers.image.description="Kubernetes operator that right-sizes GPU workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so that Kubernetes can check runAsNonRoot (the chart runs it as 65532).
RUN groupadd --system --gid 65532 gpu-rightsizer \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin gpu-rightsizer
COPY --from=build /opt/gpu-rightsizer /opt/gpu-rightsizer
ENV PATH=/opt/gpu-rightsizer/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 65532:65532
# kopf's liveness endpoint (/healthz) and the operator's /metrics.
EXPOSE 8080 8000
ENTRYPOINT ["gpu-rightsizer", "run"]

# syntax=docker/dockerfile:1.7
#
# lowbit images. One Dockerfile, three targets:
#   api         FastAPI service, dashboard, migrations (`lowbit serve-api`, `lowbit db upgrade`).
#               Base dependencies only: no torch, no onnxruntime (ARCHITECTURE.md: the API image
#               carries no engine).
#   worker      Celery worker for the `cpu` queue and Celery beat; CPU build of torch.
#   worker-gpu  Celery worker for the `gpu` queue on a CUDA runtime base image; CUDA build of torch.
#
#   docker build --target api        -t lowbit/api .
#   docker build --target worker     -t lowbit/worker .
#   docker build --target worker-gpu -t lowbit/worker-gpu .
#
# Every target installs into the virtual environment /opt/venv in a build stage and copies only
# that environment into its runtime stage, so sources, pip caches and build files stay out.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Ubuntu 24.04's glibc (2.39) is newer than Debian 12's (2.36), so the CPython built for
# python:3.11-slim-bookworm runs unchanged on it (see the worker-gpu stage).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG TORCH_VERSION=2.13.0
# The PyTorch wheel index matching the CUDA image above (cu128 = CUDA 12.8).
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3013  # the build's own pip: newest, so it reads pyproject's build backend
RUN python -m venv /opt/venv \
    && pip install --upgrade pip

# Sources shared by every build stage; .dockerignore keeps tests, .venv and caches out.
FROM python-base AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations

# ---------------------------------------------------------------------------------------------
FROM source AS api-build
# Base dependencies only. Nothing here may pull torch: tests/deploy/test_dockerfile.py checks
# that no stage the api target is built from mentions torch or the engine extra.
RUN pip install . \
    && ! python -c "import torch" 2>/dev/null

FROM python-base AS api
ARG LOWBIT_UID=10001
RUN groupadd --system --gid ${LOWBIT_UID} lowbit \
    && useradd --system --uid ${LOWBIT_UID} --gid lowbit --home-dir /home/lowbit --create-home lowbit
COPY --from=api-build /opt/venv /opt/venv
WORKDIR /home/lowbit
USER 10001:10001
EXPOSE 8000
# /healthz answers while the process is alive; /readyz (used by Kubernetes readiness) also checks
# the database and the broker, which a container health check should not depend on.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["lowbit", "serve-api", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------
FROM source AS worker-build
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
# torch first and pinned, from the CPU index, so the engine extra cannot pull a CUDA build.
# hadolint ignore=DL3013  # torch is pinned; ".[engine]" is this project, whose pins apply
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX}" \
    && pip install ".[engine]"

FROM python-base AS worker
ARG LOWBIT_UID=10001
RUN groupadd --system --gid ${LOWBIT_UID} lowbit \
    && useradd --system --uid ${LOWBIT_UID} --gid lowbit --home-dir /home/lowbit --create-home lowbit
COPY --from=worker-build /opt/venv /opt/venv
WORKDIR /home/lowbit
USER 10001:10001
# The worker (or beat) touches a liveness file from a thread; a broker outage does not fail it
# (worker/liveness.py), so a Redis blip does not restart every worker at once.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python", "-m", "worker.liveness"]
CMD ["celery", "-A", "worker.app", "worker", "-Q", "cpu", "--loglevel", "INFO"]

# ---------------------------------------------------------------------------------------------
FROM source AS worker-gpu-build
ARG TORCH_VERSION
ARG TORCH_CUDA_INDEX
# hadolint ignore=DL3013  # torch is pinned; ".[engine]" is this project, whose pins apply
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CUDA_INDEX}" \
    && pip install ".[engine]"

FROM ${CUDA_IMAGE} AS worker-gpu
ARG LOWBIT_UID=10001
# Shared libraries CPython's extension modules link against (ssl, sqlite3, ctypes, lzma, bz2,
# readline, expat); the interpreter itself comes from the python-base stage.
# hadolint ignore=DL3008  # the CUDA base image is pinned; its distribution's security fixes are wanted
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates libssl3t64 libsqlite3-0 libffi8 liblzma5 libbz2-1.0 zlib1g \
        libreadline8t64 libncursesw6 libexpat1 libuuid1 tzdata \
    && rm -rf /var/lib/apt/lists/*
COPY --from=python-base /usr/local/ /usr/local/
COPY --from=worker-gpu-build /opt/venv /opt/venv
RUN ldconfig \
    && /opt/venv/bin/python -c "import ssl, sqlite3, ctypes, lzma, bz2, torch" \
    && groupadd --system --gid ${LOWBIT_UID} lowbit \
    && useradd --system --uid ${LOWBIT_UID} --gid lowbit --home-dir /home/lowbit --create-home lowbit
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /home/lowbit
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python", "-m", "worker.liveness"]
# One process per GPU: each container (or pod) sees one GPU and runs one task at a time.
CMD ["celery", "-A", "worker.app", "worker", "-Q", "gpu", "--concurrency", "1", "--loglevel", "INFO"]

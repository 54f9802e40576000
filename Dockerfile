# syntax=docker/dockerfile:1
#
# seqcast images. The default target is the CPU serving image:
#
#   docker build -t seqcast .                       # serving, CPU, no torch
#   docker build --target gpu -t seqcast:gpu .      # serving, onnxruntime-gpu on CUDA
#   docker build --target train -t seqcast-train .  # `seqcast train`, with torch (CPU)
#
# Without a Docker engine, podman builds the same file:
#   podman build --format docker --network host --pull=never -t seqcast .
# (`--format docker` keeps the HEALTHCHECK, which the OCI image format drops.)
#
# Stages are ordered so that the last one, the CPU serving image, is what a plain
# build produces; BuildKit and buildah skip the stages a target does not need, so
# the CPU build never needs the CUDA base image.

ARG PYTHON_IMAGE=python:3.11-slim
# Must carry the CUDA and cuDNN major versions that the installed onnxruntime-gpu
# was built against: PyPI's current releases (1.31.1 when this was written) want
# CUDA 13 and cuDNN 9, and say so in the log when the libraries are missing.
# CUDA 13 needs a host driver >= 580.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04


# ---------------------------------------------------------------------------
# requirements: the dependency lists, from pyproject.toml. The install layers below
# copy only these files, so their cache holds until a dependency changes (not on
# every edit of pyproject.toml's tool settings).
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /req
COPY pyproject.toml deploy/requirements.py ./
RUN python3 requirements.py > serve.txt \
 && python3 requirements.py --extra train > train.txt \
 && python3 requirements.py --gpu > gpu.txt


# ---------------------------------------------------------------------------
# builder: a virtual environment with seqcast and its serving dependencies.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first, in their own layer: rebuilt only when they change.
COPY --from=requirements /req/serve.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY service service
COPY training training
# pip and setuptools are not needed to serve: the runtime stage gets a venv without them.
RUN pip install --no-deps . \
 && pip uninstall -y -q pip setuptools \
 && python3 -m compileall -q /opt/venv/lib


# ---------------------------------------------------------------------------
# train: `seqcast train` with torch (CPU build), writing into /app/models.
# torch comes from PyTorch's CPU index: the default PyPI wheel pulls several GB of
# CUDA libraries. TORCH_FIND_LINKS adds a local wheel directory or page instead
# (for offline builds); leave TORCH_INDEX_URL empty to not use the index at all.
FROM ${PYTHON_IMAGE} AS train
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 seqcast \
 && useradd --uid 10001 --gid seqcast --no-create-home --home-dir /app --shell /usr/sbin/nologin seqcast
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /req/train.txt /tmp/requirements.txt
RUN pip install \
      ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} \
      -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY service service
COPY training training
RUN pip install --no-deps . && rm -rf /src
COPY --chown=seqcast:seqcast models /app/models
ENV SEQCAST_MODEL_DIR=/app/models
WORKDIR /app
USER seqcast
ENTRYPOINT ["seqcast"]
CMD ["train", "--help"]


# ---------------------------------------------------------------------------
# gpu: serving on onnxruntime-gpu. The venv is built on the CUDA image itself
# (its Python differs from python:3.11-slim's), with onnxruntime-gpu in place of
# onnxruntime; the two ship the same module and must not both be installed.
FROM ${CUDA_IMAGE} AS gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 seqcast \
 && useradd --uid 10001 --gid seqcast --no-create-home --home-dir /app --shell /usr/sbin/nologin seqcast
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /req/gpu.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY service service
COPY training training
RUN pip install --no-deps . && rm -rf /src
COPY deploy/healthcheck.py /opt/seqcast/healthcheck.py
COPY --chown=seqcast:seqcast models /app/models
ENV SEQCAST_HOST=0.0.0.0 \
    SEQCAST_PORT=8000 \
    SEQCAST_MODEL_DIR=/app/models
WORKDIR /app
USER seqcast
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "/opt/seqcast/healthcheck.py"]
ENTRYPOINT ["seqcast"]
CMD ["serve"]


# ---------------------------------------------------------------------------
# runtime (default): the CPU serving image. Only the venv and the models are
# copied in: no compilers, no pip cache, no torch.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --gid 10001 seqcast \
 && useradd --uid 10001 --gid seqcast --no-create-home --home-dir /app --shell /usr/sbin/nologin seqcast
COPY --from=builder /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/seqcast/healthcheck.py
# Owned by the service user so that a fresh named volume mounted here (which starts
# as a copy of this directory) is writable by the train job, which runs as the same
# user. The API itself mounts it read-only.
COPY --chown=seqcast:seqcast models /app/models
# All configuration is SEQCAST_* environment; these are the container defaults.
ENV SEQCAST_HOST=0.0.0.0 \
    SEQCAST_PORT=8000 \
    SEQCAST_MODEL_DIR=/app/models
WORKDIR /app
USER seqcast
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "/opt/seqcast/healthcheck.py"]
# Exec form: seqcast is PID 1 and receives SIGTERM itself; uvicorn then stops
# accepting connections and lets in-flight requests finish before exiting.
ENTRYPOINT ["seqcast"]
CMD ["serve"]

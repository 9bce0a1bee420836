# starlight for GPU hosts. Build: docker build -t starlight .
# Run:   docker run --gpus all -v "$PWD/starlight-data:/data" starlight train --recipe cifar10-resnet18 --seed 1-10
# Everything the container keeps (registry, checkpoints, datasets) lives under the /data volume.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# Extras to install: postgres for a shared registry; add ray or slurm to use the image as their worker.
ARG EXTRAS=postgres

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/starlight \
    PATH=/opt/starlight/bin:$PATH \
    STARLIGHT_HOME=/data/registry \
    STARLIGHT_DATA_DIR=/data/datasets \
    HOME=/tmp

# `--compile` builds kernels with the machine's compiler (inductor: g++; Triton's CUDA launcher: gcc), and
# the runtime image has none. Unpinned: the base image's Ubuntu updates replace exact versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

# A virtual environment, because recent images refuse system-wide pip installs (PEP 668); it sees the
# image's site-packages, so the CUDA build of torch in the base image is reused, not downloaded again.
RUN python -m venv --system-site-packages /opt/starlight

WORKDIR /opt/starlight/src
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY recipes ./recipes
COPY starcli ./starcli
RUN pip install --no-cache-dir "./[${EXTRAS}]" \
    && starlight --help > /dev/null

# A numeric non-root user (no passwd entry needed, and Kubernetes' runAsNonRoot can verify it).
# HOME=/tmp above gives any uid, including `docker run --user "$(id -u)"`, a writable cache folder.
RUN mkdir -p /data/registry /data/datasets && chown -R 10001:10001 /data
USER 10001
WORKDIR /data
VOLUME ["/data"]

ENTRYPOINT ["starlight"]
CMD ["--help"]

# starlight for GPU hosts. Build: docker build -t starlight .
# Run:   docker run --gpus all -v "$PWD/starlight-data:/data" starlight train --recipe cifar10-resnet18 --seed 1-10
# Everything the container keeps (registry, checkpoints, datasets) lives under the /data volume.
# docs/docker.md: the GPU host commands, and the offline build CI does (.ci/image) over a local Debian base.

# The base: a CUDA PyTorch runtime by default. Any image with python3 (3.11 or newer) will do, with or without
# torch: CI builds over a Debian base made by debootstrap, where pip installs torch (see the PIP_* args below).
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

# Extras to install: postgres for a shared registry; add ray or slurm to use the image as their worker.
ARG EXTRAS=postgres
# Where pip finds packages, for a build that must use local ones (CI passes its machine's pip settings and
# mounts the folders they name). Build arguments, not ENV: they reach the install step only, not the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ARG PIP_CERT

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/starlight \
    PATH=/opt/starlight/bin:$PATH \
    STARLIGHT_HOME=/data/registry \
    STARLIGHT_DATA_DIR=/data/datasets \
    HOME=/tmp

# `--compile` builds kernels with the machine's compiler (inductor: g++; Triton's CUDA launcher: gcc), and
# the runtime image has none. A base that has one already (CI's) skips apt, so it builds without Debian's
# mirror. Unpinned: the base image's Ubuntu updates replace exact versions.
# hadolint ignore=DL3008
RUN if ! command -v g++ > /dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends g++ \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A virtual environment, because recent images refuse system-wide pip installs (PEP 668); it sees the
# image's site-packages, so the CUDA build of torch in the base image is reused, not downloaded again
# (a base without torch gets it from pip here).
RUN python3 -m venv --system-site-packages /opt/starlight

# The dependencies first, in a layer of their own, read from pyproject.toml: a change to starlight's code
# then rebuilds only the layers below this one, not the one with torch (CI rebuilds on every run).
WORKDIR /opt/starlight/src
COPY pyproject.toml ./
RUN python3 -c 'import sys, tomllib; \
project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [name for name in sys.argv[1].split(",") if name]; \
print("\n".join(project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]))' \
        "${EXTRAS}" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
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

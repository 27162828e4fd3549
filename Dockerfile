# syntax=docker/dockerfile:1
#
# bids-neurobolt: EEG-to-fMRI synthesis as a BIDS App, with CUDA.
#
#   docker build -t ghcr.io/bids-neurobolt/bids-neurobolt:0.1.0 \
#       --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#       --build-arg VCS_REF="$(git rev-parse HEAD)" .
#   docker run --rm --gpus all --read-only --tmpfs /tmp:rw,exec,mode=1777 -u "$(id -u):$(id -g)" \
#       -v /data/bids:/data:ro -v /data/out:/out \
#       ghcr.io/bids-neurobolt/bids-neurobolt:0.1.0 /data /out participant --participant-label 01
#
# Base: the official PyTorch runtime image of the pinned torch (CUDA 13.0 and cuDNN 9, the
# build PyPI's torch 2.13.0 wheel also uses; Python 3.11 under /opt/conda). Pin it further
# by digest (BASE_IMAGE=pytorch/pytorch:...@sha256:...) for a bit-for-bit rebuild.
# The install steps are docker/install.sh, the same script the docs and the install-parity
# test run; keep TORCH_VERSION, the base tag and .ci/run in step
# (tests/unit/test_containers.py checks it).
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime

# ---------------------------------------------------------------- stage 1: build the wheel
FROM ${BASE_IMAGE} AS wheel
WORKDIR /src
COPY . .
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------- stage 2: runtime
FROM ${BASE_IMAGE} AS runtime

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG BUILD_DATE=unknown
ARG VCS_REF=unknown
ARG TORCH_VERSION=2.13.0
# What the image pre-fetches so that runs need no network (see docs/installation.md):
# options of bids-neurobolt-fetch (tests/unit/test_containers.py parses them with it).
ARG FETCH_ARGS="--atlas difumo64 --atlas schaefer2018-400-7 --atlas harvardoxford --atlas aal --weights labram-base"

LABEL org.opencontainers.image.title="bids-neurobolt" \
      org.opencontainers.image.description="BIDS App: EEG-to-fMRI synthesis (NeuroBOLT) from simultaneous EEG-fMRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/bids-neurobolt/bids-neurobolt" \
      org.opencontainers.image.url="https://github.com/bids-neurobolt/bids-neurobolt" \
      org.opencontainers.image.documentation="https://github.com/bids-neurobolt/bids-neurobolt/tree/main/docs" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      com.nvidia.volumes.needed="nvidia_driver"

# Sentinel recorded in dataset_description.json (GeneratedBy.Container), pre-fetched data
# at fixed read-only paths, and every cache a library may write at a /tmp path, so that
# the image runs with --read-only (plus --tmpfs /tmp) and as any user id.
ENV BIDS_NEUROBOLT_CONTAINER="docker:ghcr.io/bids-neurobolt/bids-neurobolt:${VERSION}" \
    BIDS_NEUROBOLT_CACHE=/opt/bids-neurobolt/cache \
    NILEARN_DATA=/opt/bids-neurobolt/cache/nilearn_data \
    NILEARN_SHARED_DATA=/opt/bids-neurobolt/cache/nilearn_data \
    TORCH_HOME=/opt/bids-neurobolt/cache/torch \
    HOME=/home/neurobolt \
    MPLCONFIGDIR=/tmp/bids-neurobolt/matplotlib \
    XDG_CACHE_HOME=/tmp/bids-neurobolt/cache \
    XDG_CONFIG_HOME=/tmp/bids-neurobolt/config \
    MNE_DONTWRITE_HOME=true \
    DENO_DIR=/tmp/bids-neurobolt/deno \
    TORCHINDUCTOR_CACHE_DIR=/tmp/bids-neurobolt/torchinductor \
    TRITON_CACHE_DIR=/tmp/bids-neurobolt/triton \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY docker/install.sh docker/requirements.txt /opt/bids-neurobolt/docker/
COPY --from=wheel /dist /tmp/dist
RUN TORCH_VERSION="${TORCH_VERSION}" sh /opt/bids-neurobolt/docker/install.sh /tmp/dist/bids_neurobolt-*.whl \
    && rm -rf /tmp/dist

# Atlases and the LaBraM-Base weights (--pretrained labram-base), fetched once at
# build time into BIDS_NEUROBOLT_CACHE, resampled to the 2 mm grid runs use. Every RUN that
# runs the package removes the caches it left in /tmp: a folder created here would belong
# to the build's user, and the run's user could not write into it.
# FETCH_ARGS is a list of options: word splitting is intended.
# hadolint ignore=SC2086
RUN bids-neurobolt-fetch ${FETCH_ARGS} \
    && chmod -R a+rX /opt/bids-neurobolt \
    && rm -rf /tmp/bids-neurobolt

# A non-root user whose home any user id can use (Singularity and `docker run -u` run as
# the caller).
RUN useradd --create-home --home-dir /home/neurobolt --uid 1000 --user-group --shell /bin/bash neurobolt \
    && chmod -R go=u /home/neurobolt

USER 1000:1000
WORKDIR /tmp
RUN bids-neurobolt --version && rm -rf /tmp/bids-neurobolt

ENTRYPOINT ["bids-neurobolt"]

#!/bin/sh
# The one install recipe of bids-neurobolt, shared by the Dockerfile, the install-parity
# test (tests/integration/test_install_parity.py) and docs/installation.md:
#   1. PyTorch at the pinned version (already present in the pytorch/pytorch base image:
#      pip then has nothing to do; on a laptop it brings the CPU or CUDA wheel);
#   2. the exact runtime pins of docker/requirements.txt, without resolving anything else;
#   3. the bids-neurobolt wheel (or project folder) itself, without dependencies.
# Usage: sh docker/install.sh WHEEL_OR_PROJECT_DIR
# Environment: PYTHON (default: python), TORCH_VERSION (default below).
set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: sh docker/install.sh WHEEL_OR_PROJECT_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
torch_version=${TORCH_VERSION:-2.13.0}

"$python" -m pip install --no-cache-dir "torch==${torch_version}"
"$python" -m pip install --no-cache-dir --no-deps --requirement "${here}/requirements.txt"
"$python" -m pip install --no-cache-dir --no-deps "$1"

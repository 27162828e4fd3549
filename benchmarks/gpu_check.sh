#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one command for a machine lent for a few minutes.
#
#   benchmarks/gpu_check.sh [OUT_DIR] [--compile]      (from the repository root)
#
# 1. The CUDA tests (tests/unit/test_cuda.py): the CPU's model and recipe on the GPU.
# 2. bench_model.py speed on CUDA, ours against an fp32 eager loop in the same run:
#    training throughput and peak GPU memory on 10,000 windows x 3 epochs (with the
#    projected time of the paper-sized inter-subject training), and a 567-window
#    prediction for 66 outputs. About 5 minutes on an H100-class GPU.
# 3. With --compile, the benchmark again with torch.compile (compilation adds minutes).
#
# Logs go to OUT_DIR (default: $OUT, else ./gpu-check). Needs python3 with torch, numpy,
# scipy, pandas, tqdm, safetensors and pytest; bids-neurobolt need not be installed.
# Exit status: 0 when every step passed, 1 when one failed, 2 without a CUDA GPU.
set -uo pipefail

out="${OUT:-gpu-check}"
compile=0
for arg in "$@"; do
    case "$arg" in
        --compile) compile=1 ;;
        *) out="$arg" ;;
    esac
done
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: PyTorch sees no CUDA GPU here; nothing was run." >&2
    exit 2
fi
{
    nvidia-smi || true
    python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/device.txt"

status=0
python3 -m pytest -q -p no:cacheprovider -m cuda tests/unit/test_cuda.py 2>&1 \
    | tee "$out/cuda-tests.log" || status=1
python3 benchmarks/bench_model.py speed --device cuda --train-windows 10000 --epochs 3 2>&1 \
    | tee "$out/bench-speed.log" || status=1
if [ "$compile" = 1 ]; then
    python3 benchmarks/bench_model.py speed --device cuda --train-windows 10000 --epochs 3 \
        --compile 2>&1 | tee "$out/bench-speed-compile.log" || status=1
fi
exit "$status"

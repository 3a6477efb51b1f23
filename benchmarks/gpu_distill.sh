#!/usr/bin/env bash
# Issue #7 on a lent GPU in one call (the device tool's 10-minute limit): install, a CUDA
# training smoke test, then the "gpu-lease" distillation comparison (paper teacher 3 min,
# two students and compact-from-scratch 0.8 min each, all 128x128 on the GPU). ONNX Runtime
# CPU latency is left out there and added afterwards on the edge-like CPU with
#   python benchmarks/test_distill_comparison.py --latency-of OUT/comparison.json --threads 2
#
#   DATA=path/to/magnetic_tile OUT=folder bash benchmarks/gpu_distill.sh
set -uo pipefail  # pipefail: rc below is the comparison's, not tee's
DATA=${DATA:-../shared/data/magnetic_tile}
OUT=${OUT:-runs/gpu_distill}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 -m dad_edge train --data "$DATA" --preset tiny --image-size 32 --epochs 1 --device cuda \
    --out /tmp/dad_edge_smoke --quiet || { echo "CUDA training smoke test failed"; exit 1; }
# The models (a paper teacher is 0.6 GB) stay in /tmp; the report, rewritten after each row, and the log go to OUT.
python3 benchmarks/test_distill_comparison.py --budget gpu-lease --data "$DATA" --out /tmp/dad_edge_cmp \
    --report "$OUT" --no-latency "$@" 2>&1 | tee "$OUT/log.txt"

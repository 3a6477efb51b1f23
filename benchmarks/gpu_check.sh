#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call of a lent machine (the device tool's 10-minute
# limit): the test suite with the GPU visible (Triton compiled, the CUDA C kernels loaded
# through cuda-python and checked against their references), the kernel and pipeline
# benchmarks, and the GPU rows of the latency suite. Each step has its own time limit so a
# hang cannot take the others' figures with it; every log lands in OUT.
#
#   OUT=folder bash benchmarks/gpu_check.sh                       # every step
#   OUT=folder STEPS="tests latency" bash benchmarks/gpu_check.sh  # some of them
# The steps' limits add up to more than one device call allows (600 s): run them in two or three calls
# with STEPS, e.g. "tests latency resident" then "gpu_pipeline variants variants_seg" then "variants_compile".
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"

STEPS=${STEPS:-"tests gpu_kernels gpu_kernels_1080p gpu_pipeline gpu_pipeline_half latency double_buffer resident variants variants_seg variants_compile"}
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.txt, go on either way
    local name=$1 limit=$2; shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "=== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "=== $name: exit $?"
    tail -n "${TAIL:-25}" "$OUT/$name.txt"
}

step tests 240 python3 -m pytest -q -p no:cacheprovider -n 8 tests -rfs --tb=short
step gpu_kernels 60 python3 benchmarks/gpu_kernels.py
step gpu_kernels_1080p 45 python3 benchmarks/gpu_kernels.py --batch 1 8 --frame 1080 1920
step gpu_pipeline 90 python3 benchmarks/gpu_pipeline.py --batch 1 64
step gpu_pipeline_half 60 python3 benchmarks/gpu_pipeline.py --half --batch 1 64
step latency 120 python3 -m pytest -q -s -p no:cacheprovider benchmarks/test_latency.py -k "cuda"
# The host's decode + resize of batch n+1 overlapped with the GPU's batch n (runtime/double_buffer.py), side by side.
step double_buffer 60 python3 -m pytest -q -s -p no:cacheprovider benchmarks/test_double_buffer.py -k "cuda or trt"
# The resident path (pinned uint8 in, one copy each way, two streams, one graph per batch shape) against the host path.
step resident 90 python3 -m pytest -q -s -p no:cacheprovider benchmarks/test_resident.py -k cuda
# Issue #14 item 3: precisions, channels_last, cuDNN benchmark mode, graphs, torch.compile on the exported function.
EAGER="fp32-tf32 fp16 bf16 fp16-cl fp16-cudnn-bench fp16-cl-cudnn-bench fp16+graph fp16-cl-cudnn-bench+graph"
step variants 120 python3 benchmarks/gpu_variants.py --batch 1 64 --only $EAGER
step variants_seg 90 python3 benchmarks/gpu_variants.py --method seg --batch 1 64 --only $EAGER
step variants_compile 300 python3 benchmarks/gpu_variants.py --batch 1 64 --iters 50 --only fp16-compile fp16-compile-ro

#!/bin/bash
# The demo's other textures as guards of the CPU default method (library 0cabc55 code copy): the demo's data
# and budget (dad-edge demo: 128 px, 4 minutes, at most 200 epochs), seg (the new CPU default, no --method) vs
# --method diffusionad (the old default), one after the other, 2 threads, alone; then dad-edge eval.
export PYTHONPATH=/tmp/s24/code
cd /work/main
for T in grass gravel; do
  python -c "from dad_edge.data.demo import build_demo_dataset; print(build_demo_dataset('/tmp/s24/demo_$T', texture='$T', size=128))"
  D=/tmp/s24/demo_$T/$T
  for M in default diffusionad; do
    R=/tmp/s24/runs/demo_${T}_$M
    F=""; [ $M = diffusionad ] && F="--method diffusionad"
    python -m dad_edge train --data $D --out $R --minutes 4 --epochs 200 --seed 0 --quiet $F > /tmp/s24/demo_${T}_$M.train.log 2>&1
    python -m dad_edge eval $R/model.safetensors --data $D --json > /tmp/s24/demo_${T}_$M.eval.json 2>/tmp/s24/demo_${T}_$M.eval.err
  done
done

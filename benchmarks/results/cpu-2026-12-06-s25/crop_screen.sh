#!/bin/bash
# Screen (throw-away code copy /tmp/s25/code: training samples are a random CROPxCROP crop after synthesis, DAD_CROP):
# seg at 256 px, stride 1, no full-res stage, 15 training minutes, seed 1, snapshots every 5 min; then dad-edge eval.
export PYTHONPATH=/tmp/s25/code
cd /tmp/s25
D=/work/shared/data/magnetic_tile
for C in "$@"; do
  R=/tmp/s25/runs/crop${C}_s1
  DAD_CROP=$C python -m dad_edge train --data $D --out $R --minutes 15 --image-size 256 --seg-stride 1 --full-res-fraction 0 --seed 1 --quiet --snapshot-minutes 5 > /tmp/s25/crop${C}_s1.train.log 2>&1
  python -m dad_edge eval $R/model.safetensors --data $D --json > /tmp/s25/crop${C}_s1.eval.json 2>/tmp/s25/crop${C}_s1.eval.err
  for S in $R/snapshots/*.safetensors; do echo $S; python -m dad_edge eval $S --data $D --json; done > /tmp/s25/crop${C}_s1.snap.jsonl 2>/dev/null
done

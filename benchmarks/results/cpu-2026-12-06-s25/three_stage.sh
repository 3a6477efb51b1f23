#!/bin/bash
# Screen (throw-away code copy /tmp/s25/code3, DAD_S4): the seg default with its first third at stride 4 (net reads 32x32),
# the second at stride 2, the last at stride 1; saved map = mean of the maps at strides 1, 2, 4. The aim command otherwise.
export PYTHONPATH=/tmp/s25/code3
cd /tmp/s25
D=/work/shared/data/magnetic_tile
S=$1
# seed 1 ran with DAD_S4_MAP=1 semantics (map strides 1, 2, 4: the patch before this line); later seeds: map (1, 2)
R=/tmp/s25/runs/three_s$S
DAD_S4=0.3333333 python -m dad_edge train --data $D --out $R --minutes 30 --seed $S --quiet --snapshot-minutes 5 > /tmp/s25/three_s$S.train.log 2>&1
python -m dad_edge eval $R/model.safetensors --data $D --json > /tmp/s25/three_s$S.eval.json 2>/tmp/s25/three_s$S.eval.err

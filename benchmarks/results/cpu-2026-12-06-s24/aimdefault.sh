#!/bin/bash
# The aim command at library 0cabc55 (no --method: seg is now the CPU default), then dad-edge eval.
S=$1
export PYTHONPATH=/tmp/s24/code
cd /work/main
R=/tmp/s24/runs/aimdefault_s$S
python -m dad_edge train --data ../shared/data/magnetic_tile --out $R --minutes 30 --seed $S --snapshot-minutes 5 > /tmp/s24/aimdefault_s$S.train.log 2>&1
python -m dad_edge eval $R/model.safetensors --data ../shared/data/magnetic_tile --json > /tmp/s24/aimdefault_s$S.eval.json 2> /tmp/s24/aimdefault_s$S.eval.err

#!/bin/bash
# Is it the full-resolution third? seg pooled throughout (--full-res-fraction 0) on grass seed 1 and gravel seed 0
# at the demo's budget, then the seg default on grass with 12 minutes (a longer full-resolution stage); 2 threads,
# alone, one after the other.
export PYTHONPATH=/tmp/s24/code
cd /work/main
run() { N=$1; D=$2; shift 2; python -m dad_edge train --data $D --out /tmp/s24/runs/$N --epochs 200 --quiet "$@" > /tmp/s24/$N.train.log 2>&1
        python -m dad_edge eval /tmp/s24/runs/$N/model.safetensors --data $D --json > /tmp/s24/$N.eval.json 2>/tmp/s24/$N.eval.err; }
run demo_grass_segfr0_s1 /tmp/s24/demo_grass/grass --minutes 4 --seed 1 --full-res-fraction 0
run demo_gravel_segfr0 /tmp/s24/demo_gravel/gravel --minutes 4 --seed 0 --full-res-fraction 0
run demo_grass_default_12min /tmp/s24/demo_grass/grass --minutes 12 --epochs 100000 --seed 0

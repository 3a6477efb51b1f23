#!/bin/bash
# The grass demo again: seed 1 of the pair (default = seg, --method diffusionad), and seed 0 of seg without its
# full-resolution third; the demo's budget (4 minutes, <= 200 epochs), 2 threads, alone, one after the other.
export PYTHONPATH=/tmp/s24/code
cd /work/main
D=/tmp/s24/demo_grass/grass
run() { N=$1; shift; python -m dad_edge train --data $D --out /tmp/s24/runs/$N --minutes 4 --epochs 200 --quiet "$@" > /tmp/s24/$N.train.log 2>&1
        python -m dad_edge eval /tmp/s24/runs/$N/model.safetensors --data $D --json > /tmp/s24/$N.eval.json 2>/tmp/s24/$N.eval.err; }
run demo_grass_default_s1 --seed 1
run demo_grass_diffusionad_s1 --seed 1 --method diffusionad
run demo_grass_segfr0 --seed 0 --full-res-fraction 0

#!/bin/bash
# The gravel demo's second seed pair: seg (the default) vs --method diffusionad, the demo's budget, 2 threads, alone.
export PYTHONPATH=/tmp/s24/code
cd /work/main
D=/tmp/s24/demo_gravel/gravel
run() { N=$1; shift; python -m dad_edge train --data $D --out /tmp/s24/runs/$N --minutes 4 --epochs 200 --quiet "$@" > /tmp/s24/$N.train.log 2>&1
        python -m dad_edge eval /tmp/s24/runs/$N/model.safetensors --data $D --json > /tmp/s24/$N.eval.json 2>/tmp/s24/$N.eval.err; }
run demo_gravel_default_s1 --seed 1
run demo_gravel_diffusionad_s1 --seed 1 --method diffusionad

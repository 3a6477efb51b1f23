#!/usr/bin/env bash
# The aim command with --method seg, alone, 2 threads (seed 0, the default), then eval
cd /work/main
dad-edge train --data ../shared/data/magnetic_tile --out /tmp/s20/runs/aim_seg_s0 --minutes 30 --method seg --quiet > /tmp/s20/runs/aim_seg_s0.train.log 2>&1
dad-edge eval /tmp/s20/runs/aim_seg_s0/model.safetensors --data ../shared/data/magnetic_tile > /tmp/s20/runs/aim_seg_s0.eval 2>&1

#!/usr/bin/env bash
# The demo's data and budget (compact, 4 training minutes, 2 threads, alone) with --method seg, then eval
cd /work/main
dad-edge train --data /tmp/s19/demo/data/brick --out /tmp/s20/runs/demo_seg --minutes 4 --epochs 200 --method seg --quiet > /tmp/s20/runs/demo_seg.train.log 2>&1
dad-edge eval /tmp/s20/runs/demo_seg/model.safetensors --data /tmp/s19/demo/data/brick > /tmp/s20/runs/demo_seg.eval 2>&1

#!/usr/bin/env bash
# The demo's data and budget (compact, 4 training minutes / 200 epochs, 2 threads, alone) with --method seg at the
# session-22 defaults (full-resolution last third), library commit aafa388 (/work/main), then eval
cd /work/main
dad-edge train --data /tmp/s19/demo/data/brick --out /tmp/s23/runs/demo_seg --minutes 4 --epochs 200 --method seg --quiet > /tmp/s23/runs/demo_seg.train.log 2>&1
dad-edge eval /tmp/s23/runs/demo_seg/model.safetensors --data /tmp/s19/demo/data/brick > /tmp/s23/runs/demo_seg.eval 2>&1

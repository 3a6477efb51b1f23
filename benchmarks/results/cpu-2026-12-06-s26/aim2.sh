#!/usr/bin/env bash
# usage: aim2.sh SEED...; the aim command exactly (installed library, /work/main at 3f17fa0), alone, 2 threads, then eval --json.
cd /tmp/s26
for s in "$@"; do
  out=/tmp/s26/runs/aim_s$s
  dad-edge train --data /work/shared/data/magnetic_tile --out $out --minutes 30 --seed $s --snapshot-minutes 5 > $out.train.log 2>&1
  dad-edge eval $out/model.safetensors --data /work/shared/data/magnetic_tile --json > $out.json 2> $out.eval
done

#!/usr/bin/env bash
# usage: curve_eval.sh CODE NAME ; learning curves of both seeds' snapshots (weight average), side by side
code=$1; name=$2
res=/work/main/benchmarks/results/cpu-2026-12-05-s20
cd $code
core=0
for s in 1 2; do
  OMP_NUM_THREADS=1 taskset -c $core python benchmarks/learning_curve.py /tmp/s20/runs/${name}_s$s \
     --data /work/shared/data/magnetic_tile --weights average --out $res/curve_${name}_s$s.json > /tmp/s20/curve_${name}_s$s.txt 2>&1 &
  core=$((core+1))
done
wait

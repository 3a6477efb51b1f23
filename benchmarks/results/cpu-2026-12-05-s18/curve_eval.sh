#!/usr/bin/env bash
cd /work/main
res=benchmarks/results/cpu-2026-12-05-s18
mkdir -p $res
core=0
for s in 1 2; do
  OMP_NUM_THREADS=1 taskset -c $core python benchmarks/learning_curve.py /tmp/s18/runs/curve_s$s \
     --data /work/shared/data/magnetic_tile --weights average --out $res/curve_s$s.json > /tmp/s18/curve_s$s.txt 2>&1 &
  core=$((core+1))
done
wait

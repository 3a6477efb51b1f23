#!/usr/bin/env bash
# usage: aim.sh CODE NAME EPOCHS "SEEDS" [extra train args]; one seed per core, 1 thread, pinned
code=$1; name=$2; epochs=$3; seeds=$4; shift 4
cd $code
core=0
for s in $seeds; do
  out=/tmp/s18/runs/${name}_s$s
  ( OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --epochs $epochs --seed $s --quiet "$@" > $out.train.log 2>&1
    OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1 ) &
  core=$((core+1))
done
wait

#!/usr/bin/env bash
# usage: pair.sh SEED; the default command (DiffusionAD) and the same with --full-res-fraction 1/3, side by side,
# 30 training minutes each, 1 thread each, pinned one per core (library commit 99a11e7 in /tmp/s23/code), then eval each.
code=/tmp/s23/code; s=$1
run() { # core name [args]
  core=$1; name=$2; shift 2; out=/tmp/s23/runs/${name}_s$s
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --minutes 30 --seed $s --quiet "$@" > $out.train.log 2>&1
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1
}
cd $code
run 0 dad_base & run 1 dad_full3 --full-res-fraction 0.3333333333 & wait

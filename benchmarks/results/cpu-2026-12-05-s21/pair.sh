#!/usr/bin/env bash
# usage: pair.sh CODE NAME EPOCHS SEED_A SEED_B [train args...]; both seeds side by side, 1 thread each, pinned one per core
code=$1; name=$2; epochs=$3; sa=$4; sb=$5; shift 5
run() { # core seed
  core=$1; s=$2; out=/tmp/s21/runs/${name}_s$s
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --epochs $epochs --seed $s --quiet "${ARGS[@]}" > $out.train.log 2>&1
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1
}
ARGS=("$@")
cd $code
run 0 $sa & run 1 $sb & wait

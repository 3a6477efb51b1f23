#!/usr/bin/env bash
# usage: duo.sh SEED CODE_A NAME_A CODE_B NAME_B [train args...]: two variants side by side, 1 thread each, pinned one per core
s=$1; ca=$2; na=$3; cb=$4; nb=$5; shift 5
ARGS=("$@")
run() { # core code name
  core=$1; code=$2; out=/tmp/s20/runs/${3}_s$s
  cd $code
  OMP_NUM_THREADS=1 taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --seed $s --quiet "${ARGS[@]}" > $out.train.log 2>&1
  OMP_NUM_THREADS=1 taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1
}
run 0 $ca $na & run 1 $cb $nb & wait

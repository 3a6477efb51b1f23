#!/usr/bin/env bash
# usage: pair.sh EPOCHS "SEEDS" ; per seed: default on core 0 and --line-prob 0.3 on core 1, side by side, 1 thread each
code=/tmp/s19/code; epochs=$1; seeds=$2
run() { # core name seed args...
  core=$1; name=$2; s=$3; shift 3; out=/tmp/s19/runs/${name}_s$s
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --epochs $epochs --seed $s --quiet "$@" > $out.train.log 2>&1
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1
}
cd $code
for s in $seeds; do
  run 0 base$epochs $s &
  run 1 line$epochs $s --line-prob 0.3 &
  wait
done

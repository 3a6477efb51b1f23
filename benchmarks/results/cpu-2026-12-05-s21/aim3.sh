#!/usr/bin/env bash
# The aim command with --method seg, seeds 0 1 2 one after another, alone (2 threads), then eval each.
code=/tmp/s21/code
cd $code
for s in 0 1 2; do
  out=/tmp/s21/runs/aimseg_s$s
  PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --minutes 30 --method seg --seed $s --quiet --snapshot-minutes 5 > $out.train.log 2>&1
  PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1
done

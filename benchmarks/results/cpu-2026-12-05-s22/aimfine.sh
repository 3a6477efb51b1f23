#!/usr/bin/env bash
# The aim command with --method seg and a full-resolution fine stage (width 8) on the stride-2 net
# (the screening copy sets fine_width=8 wherever seg_stride > 1); seeds one after another, alone (2 threads), then eval.
code=/tmp/s22/code
cd $code
for s in "$@"; do
  out=/tmp/s22/runs/aimfine_s$s
  PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --minutes 30 --method seg --seed $s --quiet --snapshot-minutes 5 > $out.train.log 2>&1
  PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1
done

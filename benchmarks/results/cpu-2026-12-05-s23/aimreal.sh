#!/usr/bin/env bash
# The aim command with --method seg at the library's defaults (commit in /tmp/s23/code: full-resolution last third,
# map at strides 1 and 2), seeds one after another, alone (2 threads), then eval each.
code=/tmp/s23/code
cd $code
for s in "$@"; do
  out=/tmp/s23/runs/aimreal_s$s
  PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --minutes 30 --method seg --seed $s --quiet --snapshot-minutes 5 > $out.train.log 2>&1
  PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile > $out.eval 2>&1
done

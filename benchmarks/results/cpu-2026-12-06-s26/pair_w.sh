#!/usr/bin/env bash
# usage: pair_w.sh SEED; the aim command (default widths 16,32,48,64,64,64) and the same with the seg net's deep
# levels widened (DAD_SEG_WIDTHS=16,32,64,128,256,256; seg_widths.patch), side by side, 30 training minutes each,
# 1 thread each, pinned one per core (library 3f17fa0 + the patch in /tmp/s26/code_w4), then eval each (--json).
code=/tmp/s26/code_w4; s=$1
run() { # core name widths
  core=$1; name=$2; widths=$3; out=/tmp/s26/runs/${name}_s$s
  export DAD_SEG_WIDTHS=$widths
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --minutes 30 --seed $s --quiet --snapshot-minutes 10 > $out.train.log 2>&1
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile --json > $out.json 2> $out.eval
}
cd $code
python -c "import dad_edge; assert dad_edge.__file__.startswith('$code'), dad_edge.__file__"
run 0 base 16,32,48,64,64,64 & run 1 w4 16,32,64,128,256,256 & wait

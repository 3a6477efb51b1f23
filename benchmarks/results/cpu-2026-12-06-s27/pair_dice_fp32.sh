#!/usr/bin/env bash
# usage: pair_dice_fp32.sh SEED; two screens of the aim command side by side, 30 training minutes each, 1 thread each,
# pinned one per core (library copy of main at session 27 (after a171295; the training code is 2d2427b's) in /tmp/s27/code_dice with dice.patch), then eval each (--json):
#   core 0: soft Dice (weight 1, anomalous samples) added to the seg loss (DAD_DICE=1)
#   core 1: the default loss trained in float32 (--no-amp) instead of bfloat16 autocast
# Baseline: session 26's pair_base_s1 (the aim command at 1 thread beside another 1-thread run): 0.900 / 0.837 / 0.758.
code=/tmp/s27/code_dice; s=$1
run() { # core name dice extra
  core=$1; name=$2; out=/tmp/s27/runs/${name}_s$s
  DAD_DICE=$3 OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
      --out $out --minutes 30 --seed $s --quiet --snapshot-minutes 10 $4 > $out.train.log 2>&1
  OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c $core python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
      --data /work/shared/data/magnetic_tile --json > $out.json 2> $out.eval
}
cd $code
python -c "import dad_edge; assert dad_edge.__file__.startswith('$code'), dad_edge.__file__"
run 0 dice 1 "" & run 1 fp32 0 --no-amp & wait

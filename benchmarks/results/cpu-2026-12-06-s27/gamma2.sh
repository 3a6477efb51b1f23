#!/usr/bin/env bash
# usage: gamma2.sh SEED; the aim command with the focal loss's gamma at 2 (DRAEM's) instead of 4 (DiffusionAD's),
# 30 training minutes, 1 thread pinned to core 0 (the other core: light editing and short tests), then eval (--json).
# Library copy /tmp/s27/code_dice with dice_gamma.patch (DAD_DICE unset: no Dice term). Baseline: session 26's
# pair_base_s1 (the aim command at 1 thread beside another run): 0.900 / 0.837 / 0.758.
code=/tmp/s27/code_dice; s=$1; out=/tmp/s27/runs/gamma2_s$s
cd $code
python -c "import dad_edge; assert dad_edge.__file__.startswith('$code'), dad_edge.__file__"
DAD_GAMMA=2 OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c 0 python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
    --out $out --minutes 30 --seed $s --quiet --snapshot-minutes 10 > $out.train.log 2>&1
OMP_NUM_THREADS=1 PYTHONPATH=$code taskset -c 0 python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
    --data /work/shared/data/magnetic_tile --json > $out.json 2> $out.eval

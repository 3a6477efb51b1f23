#!/usr/bin/env bash
# Progressive resolution screen: the aim run's (seg, stride 2) EMA snapshot at M minutes, fine-tuned at stride 1 for 30-M minutes.
code=/tmp/s22/code2
s=$1; m=$2; rest=$((30-m))
out=/tmp/s22/runs/prog${m}_s$s
cd $code
DAD_INIT=/tmp/s21/runs/aimseg_s$s/snapshots/model_${m}min_ema.safetensors PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" train --data /work/shared/data/magnetic_tile \
    --out $out --minutes $rest --method seg --seg-stride 1 --seed $s --quiet > $out.train.log 2>&1
PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors \
    --data /work/shared/data/magnetic_tile > $out.eval 2>&1

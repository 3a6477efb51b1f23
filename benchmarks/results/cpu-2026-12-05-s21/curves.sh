#!/usr/bin/env bash
# After aim3.sh: the learning curves of the three aim runs (EMA snapshots every 5 min + the saved model), then
# the map and score rules on the three saved models. 2 threads, alone. Run from the repository root.
R=benchmarks/results/cpu-2026-12-05-s21
python benchmarks/learning_curve.py /tmp/s21/runs/aimseg_s0 /tmp/s21/runs/aimseg_s1 /tmp/s21/runs/aimseg_s2 \
    --data ../shared/data/magnetic_tile --weights average --out $R/aim_seg_curve.json > $R/aim_seg_curve.txt 2>&1
python benchmarks/map_rules.py /tmp/s21/runs/aimseg_s{0,1,2}/model.safetensors --data ../shared/data/magnetic_tile \
    --out $R/aim_seg_map_rules.json > $R/aim_seg_map_rules.txt 2>&1

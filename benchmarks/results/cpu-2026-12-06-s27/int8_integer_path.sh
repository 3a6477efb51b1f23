#!/bin/bash
# Session 27: INT8 with the convolutions only (before a171295) against the integer path (a171295), side by side.
# compact (DiffusionAD) and compact-seg at 256x256 RGB, random weights (mk256.py), INT8 calibrated on 16 magnetic-tile
# good images; the seg aim model of session 26 (128 gray, seed 1) calibrated on 300. Run from /tmp/s27.
set -e
python mk256.py
for m in dad256 seg256; do dad-edge export $m.safetensors --format onnx --out $m.onnx; done
dad-edge export /tmp/s26/runs/aim_s1/model.safetensors --format onnx --out seg128.onnx
cat > quant_ab.py <<'PY'
import sys
import dad_edge.export.quantize as q
src, n = sys.argv[1], int(sys.argv[2])
q.quantize_onnx(src, src.replace(".onnx", "-int8-path.onnx"), "/work/shared/data/magnetic_tile", max_images=n)
q.INTEGER_PATH_OPS = ()  # the export before a171295: convolutions only
q.quantize_onnx(src, src.replace(".onnx", "-int8-convs.onnx"), "/work/shared/data/magnetic_tile", max_images=n)
PY
python quant_ab.py dad256.onnx 16; python quant_ab.py seg256.onnx 16; python quant_ab.py seg128.onnx 300
for m in dad256 seg256 seg128; do
  python /work/main/benchmarks/ort_op_profile.py $m.onnx $m-int8-convs.onnx $m-int8-path.onnx --rounds 15
done
for f in seg128.onnx seg128-int8-convs.onnx seg128-int8-path.onnx; do
  dad-edge eval $f --data /work/shared/data/magnetic_tile --json > eval_$f.json
  python -c "import json; d = json.load(open('eval_$f.json')); print('$f', 'image %.4f pixel %.4f au_pro %.4f' % (d['image_auroc'], d['pixel_auroc'], d['au_pro']))"
done

"""Session 28 screen: weight quantisation variants that move QLinearConv off MLAS's symmetric-conv kernel."""
import sys
import onnxruntime.quantization as oq
import dad_edge.export.quantize as q

src, n = sys.argv[1], int(sys.argv[2])
orig = oq.quantize_static
V = {
    "pt_sym": dict(per_channel=False),
    "pt_asym": dict(per_channel=False, extra_options={"WeightSymmetric": False}),
    "pc_asym": dict(extra_options={"WeightSymmetric": False}),
    "u8u8": dict(per_channel=False, weight_type=oq.QuantType.QUInt8),
}
for tag in sys.argv[3].split(","):
    oq.quantize_static = lambda *a, **k: orig(*a, **{**k, **V[tag]})
    try:
        q.quantize_onnx(src, src.replace(".onnx", f"-{tag}.onnx"), "/work/shared/data/magnetic_tile", max_images=n)
        print("wrote", tag)
    except Exception as e:
        print(tag, "FAILED", type(e).__name__, str(e)[:200])

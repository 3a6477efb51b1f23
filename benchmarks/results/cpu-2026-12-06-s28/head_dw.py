"""Screen: the seg head (3x3 conv, 16 -> 1 channel) as a depthwise conv + channel sum + bias: same function."""
import sys, numpy as np, onnx
from onnx import helper, numpy_helper
src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src); g = m.graph
inits = {i.name: i for i in g.initializer}
node = next(n for n in g.node if n.op_type == "Conv" and n.name.endswith("head/Conv"))
W = numpy_helper.to_array(inits[node.input[1]]); B = numpy_helper.to_array(inits[node.input[2]])
cin = W.shape[1]
g.initializer.extend([numpy_helper.from_array(W.reshape(cin, 1, *W.shape[2:]).astype(np.float32), "head_dw_w"),
                      numpy_helper.from_array(B.reshape(1, 1, 1, 1).astype(np.float32), "head_dw_b"),
                      numpy_helper.from_array(np.array([1], np.int64), "head_dw_axes")])
attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
dw = helper.make_node("Conv", [node.input[0], "head_dw_w"], ["head_dw_out"], name="head_dw", group=cin,
                      kernel_shape=attrs["kernel_shape"], pads=attrs["pads"], strides=attrs.get("strides", [1, 1]))
rs = helper.make_node("ReduceSum", ["head_dw_out", "head_dw_axes"], ["head_dw_sum"], name="head_sum", keepdims=1)
add = helper.make_node("Add", ["head_dw_sum", "head_dw_b"], [node.output[0]], name="head_bias")
i = list(g.node).index(node)
g.node.remove(node)
for k, n in enumerate((dw, rs, add)):
    g.node.insert(i + k, n)
onnx.checker.check_model(m); onnx.save(m, dst)
import onnxruntime as ort
x = np.random.default_rng(0).uniform(0, 255, (2, 3, 256, 256)).astype(np.float32)
a = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"image": x})
b = ort.InferenceSession(dst, providers=["CPUExecutionProvider"]).run(None, {"image": x})
print("max |d map|", np.abs(a[0] - b[0]).max(), "max |d score|", np.abs(a[1] - b[1]).max())

"""Session 28 screen: INT8 variants of the seg net's export (monkeypatched quantize.py), written side by side."""
import sys, functools
import onnxruntime.quantization as oq
import dad_edge.export.quantize as q

src, n = sys.argv[1], int(sys.argv[2])
which = sys.argv[3].split(",") if len(sys.argv) > 3 else ["path", "edge_in", "edge_all", "sym", "s8"]
orig_static, orig_layers = oq.quantize_static, q.layers_to_quantize

def edges(graph, head):
    region = q.float_region(graph)
    by = {x.name: x for x in graph.node}
    rout = {t for nm in region for t in by[nm].output}
    rin = {t for nm in region for t in by[nm].input}
    return [x.name for x in graph.node if x.op_type == "Conv" and (head or not rin.intersection(x.output))]

def run(tag, layers=None, extra=None):
    q.layers_to_quantize = layers or orig_layers
    oq.quantize_static = functools.partial(orig_static, extra_options=extra) if extra else orig_static
    if tag == "s8":
        oq.quantize_static = functools.partial(
            lambda *a, **k: orig_static(*a, **{**k, "activation_type": oq.QuantType.QInt8}),
            extra_options={"ActivationSymmetric": True})
    meta = q.quantize_onnx(src, src.replace(".onnx", f"-{tag}.onnx"), "/work/shared/data/magnetic_tile", max_images=n)
    print(tag, meta["quantization"]["quantized_layers"], meta["quantization"]["float_layers"])

for tag in which:
    if tag == "path": run(tag)
    if tag == "edge_in": run(tag, layers=lambda g: edges(g, False))
    if tag == "edge_all": run(tag, layers=lambda g: edges(g, True))
    if tag == "sym": run(tag, extra={"ActivationSymmetric": True})
    if tag == "s8": run(tag)

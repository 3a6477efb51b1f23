import sys, json, collections, numpy as np, onnxruntime as ort
from dad_edge.runtime.backends.onnxruntime_backend import SESSION, session_options
path = sys.argv[1]
o = session_options(ort, dict(SESSION)); o.enable_profiling = True; o.profile_file_prefix = "/tmp/s28/prof"
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]; x = np.random.default_rng(0).uniform(0, 255, (1,) + tuple(i.shape[1:])).astype(np.float32)
for _ in range(30): s.run(None, {i.name: x})
ev = json.load(open(s.end_profiling()))
t = collections.Counter(); shp = {}
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        t[(e["args"]["op_name"], e["name"][:-12])] += e["dur"] / 30 / 1000
        shp[(e["args"]["op_name"], e["name"][:-12])] = (e["args"].get("input_type_shape"), e["args"].get("output_type_shape"))
for k, v in t.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 40):
    ins, outs = shp[k]
    print(f"{v:6.2f} ms {k[0]:16s} {k[1][-40:]:40s} in={[list(d.values())[0] for d in ins][:1]} out={[list(d.values())[0] for d in outs]}")

"""Session 28 screen: ONNX Runtime's session.dynamic_block_base (dynamic block sizing of parallel loops) on fp32
and INT8 seg256, interleaved p50 of session.run, batch 1."""
import sys, time, numpy as np, onnxruntime as ort
from dad_edge.runtime.backends.onnxruntime_backend import SESSION, session_options
sess = {}
for f in sys.argv[1:]:
    for base in ("0", "4"):
        o = session_options(ort, dict(SESSION))
        if base != "0":
            o.add_session_config_entry("session.dynamic_block_base", base)
        S = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
        i = S.get_inputs()[0]
        x = np.random.default_rng(0).uniform(0, 255, (1,) + tuple(i.shape[1:])).astype(np.float32)
        sess[(f, base)] = (S, {i.name: x})
        for _ in range(3): S.run(None, {i.name: x})
t = {k: [] for k in sess}
for r in range(12):
    for k, (S, feed) in sess.items():
        for _ in range(5):
            t0 = time.perf_counter(); S.run(None, feed); t[k].append(time.perf_counter() - t0)
for (f, base), v in t.items():
    print(f"{f:22s} dynamic_block_base={base}: p50 {np.median(v)*1e3:6.2f} ms, x default {np.median(v)/np.median(t[(f, '0')]):.2f}")

"""Session 28: ONNX Runtime session settings on this VM, fp32 vs INT8 seg256, interleaved p50 of session.run."""
import sys, time, numpy as np, onnxruntime as ort
from dad_edge.runtime.backends.onnxruntime_backend import SESSION, session_options
files = sys.argv[1:]
variants = {"chosen": {}, "spin": {"allow_spinning": True}, "1thread": {"intra_op_num_threads": 1},
            "1thread_spin": {"intra_op_num_threads": 1, "allow_spinning": True}, "noarena": {"enable_cpu_mem_arena": False}}
sess = {}
for f in files:
    for v, s in variants.items():
        o = session_options(ort, {**SESSION, **s})
        S = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
        i = S.get_inputs()[0]
        x = np.random.default_rng(0).uniform(0, 255, (1,) + tuple(i.shape[1:])).astype(np.float32)
        sess[(f, v)] = (S, {i.name: x})
        for _ in range(3): S.run(None, {i.name: x})
times = {k: [] for k in sess}
for r in range(12):
    for k, (S, feed) in sess.items():
        for _ in range(5):
            t = time.perf_counter(); S.run(None, feed); times[k].append(time.perf_counter() - t)
for f in files:
    base = np.median(times[(f, "chosen")])
    for v in variants:
        p = np.median(times[(f, v)])
        print(f"{f:28s} {v:14s} p50 {p*1e3:6.2f} ms  {p/base:5.2f}x chosen")

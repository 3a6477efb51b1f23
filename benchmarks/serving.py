"""Serving and multi-process training on this machine (issue #16, #17 part 4). Run once, by hand:

    python benchmarks/serving.py                       # all parts; JSON into benchmarks/results/serving.json
    python benchmarks/serving.py --skip-train          # the server parts only

1. parity: every magnetic-tile test image (582) through `dad-edge serve` (gRPC) against the local Detector
   on the same ONNX file: max |score difference| and max |map difference|;
2. throughput: images/s and p50/p99 request latency with 1, 4 and 16 concurrent clients (one frame per
   request, each client its own Detector), against the local Detector (one thread, batch 1) in the same run;
3. load: 16 good clients and one client sending malformed requests (wrong dtype, wrong rank, empty batch,
   2 channels, a huge frame) in a loop, plus clients killed mid-request: requests that got an error vs
   answered, and whether every good answer was its own;
4. training: images/s of `dad-edge train` on the CPU, 1 process (2 torch threads) vs 2 gloo processes under
   torchrun (1 thread each), same data, preset and batch size.
The model is the compact preset at 128 x 128 with random weights (the cost of a trained one); frames are
decoded once beforehand, so JPEG decoding is not timed. The server needs numpy<2 (nvidia-pytriton 0.7):
here, or in the Python named by DAD_EDGE_SERVE_PYTHON (`bash .ci/run` builds one). Magnetic-tile frames
come in several sizes and Triton batches one size at a time (README, serving).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.deploy_support import MAGNETIC_TILE, write_checkpoint  # noqa: E402
from tests.serve_support import Server, free_ports  # noqa: E402


def percentile_ms(latencies, q):
    return float(np.percentile(np.asarray(latencies) * 1e3, q)) if latencies else float("nan")


def clients_run(url, frames, n_clients, seconds):
    """n_clients threads, each its own Detector, one frame per request, for `seconds`: images/s, latencies."""
    import dad_edge

    latencies, count, stop, errors = [], [0], threading.Event(), []
    lock = threading.Lock()

    def client(k):
        try:
            with dad_edge.Detector(url, batch_size=1, color_order="RGB") as det:
                i = k
                while not stop.is_set():
                    t0 = time.perf_counter()
                    det.infer_batch([frames[i % len(frames)]])
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                        count[0] += 1
                    i += n_clients
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    wall = time.perf_counter() - t0
    return {"clients": n_clients, "images_per_s": count[0] / wall, "requests": count[0],
            "p50_ms": percentile_ms(latencies, 50), "p99_ms": percentile_ms(latencies, 99), "errors": errors[:3]}


def local_run(model, frames, seconds):
    import dad_edge

    latencies = []
    with dad_edge.Detector(model, batch_size=1, color_order="RGB") as det:
        det.infer_batch([frames[0]])
        t_end, i = time.perf_counter() + seconds, 0
        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            det.infer_batch([frames[i % len(frames)]])
            latencies.append(time.perf_counter() - t)
            i += 1
        wall = time.perf_counter() - t0
    return {"clients": "local", "images_per_s": i / wall, "requests": i, "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99)}


def load_run(server, frames, expected, seconds):
    """16 good clients checking their answers; one bad client cycling through malformed requests; a client
    process killed mid-request every few seconds."""
    import dad_edge
    import tritonclient.grpc as g

    stop = threading.Event()
    tally = {"good_ok": 0, "good_wrong": 0, "good_error": 0, "bad_error": 0, "bad_answered": 0, "vanished": 0}
    lock = threading.Lock()

    def good(k):
        with dad_edge.Detector(server.grpc_url + "?reconnect=0", batch_size=1, color_order="RGB") as det:
            i = k
            while not stop.is_set():
                j = i % len(frames)
                try:
                    _, s = det.infer_batch([frames[j]])
                    key = "good_ok" if abs(float(s[0]) - expected[j]) <= 1e-5 else "good_wrong"
                except Exception:
                    key = "good_error"
                with lock:
                    tally[key] += 1
                i += 16

    bad_requests = [(np.zeros((1, 20, 20, 3), np.float32), "FP32"), (np.zeros((1, 20, 20), np.uint8), "UINT8"),
                    (np.zeros((0, 20, 20, 3), np.uint8), "UINT8"), (np.zeros((2, 20, 20, 2), np.uint8), "UINT8"),
                    (np.zeros((1, 8200, 8200, 1), np.uint8), "UINT8")]

    def bad():
        client = g.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        k = 0
        while not stop.is_set():
            frames_bad, dtype = bad_requests[k % len(bad_requests)]
            x = g.InferInput("frames", list(frames_bad.shape), dtype)
            x.set_data_from_numpy(frames_bad)
            try:
                r = client.infer("dad_edge", [x], client_timeout=60)
                key = "bad_error" if any(r.as_numpy("error")) else "bad_answered"
            except Exception:
                key = "bad_error"
            with lock:
                tally[key] += 1
            k += 1

    script = ("import numpy as np, tritonclient.grpc as g, sys\n"
              "c = g.InferenceServerClient(sys.argv[1]); x = g.InferInput('frames', [8, 1000, 1000, 3], 'UINT8')\n"
              "x.set_data_from_numpy(np.ones((8, 1000, 1000, 3), np.uint8)); print('go', flush=True)\n"
              "c.infer('dad_edge', [x])\n")
    threads = [threading.Thread(target=good, args=(k,)) for k in range(16)] + [threading.Thread(target=bad)]
    for t in threads:
        t.start()
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        p = subprocess.Popen([sys.executable, "-c", script, f"127.0.0.1:{server.grpc_port}"], stdout=subprocess.PIPE,
                             text=True)
        p.stdout.readline()
        time.sleep(0.3)
        p.kill()
        p.wait()
        tally["vanished"] += 1
        time.sleep(2)
    stop.set()
    for t in threads:
        t.join(120)
    tally["server_alive_after"] = server.proc.poll() is None
    return tally


def train_run(data, out, nproc, epochs):
    env = {**os.environ, "OMP_NUM_THREADS": "1" if nproc > 1 else "2"}
    args = ["train", "--data", str(data), "--out", str(out), "--preset", "compact", "--image-size", "64",
            "--batch-size", "8", "--epochs", str(epochs), "--device", "cpu", "--quiet", "--select", "last"]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "dad_edge"] if nproc > 1 else [sys.executable, "-m", "dad_edge"]) + args
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    from dad_edge.artifacts.checkpoint import read_tensors

    _, meta = read_tensors(out / "train_state.safetensors")
    history = meta["train_state"]["history"]
    per_rank = float(np.mean([h["images_per_s"] for h in history[1:]] or [history[0]["images_per_s"]]))
    return {"processes": nproc, "images_per_s_per_rank": per_rank, "images_per_s": per_rank * nproc,
            "epochs": len(history)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20, help="per throughput point")
    p.add_argument("--load-seconds", type=float, default=30)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--train-epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving.json")
    a = p.parse_args()
    import dad_edge
    from dad_edge.data.imageio import read_image
    from dad_edge.export.onnx_export import export_onnx
    from dad_edge.model.config import preset
    from dad_edge.training.compare import cpu_name

    tmp = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    cfg = preset("compact")
    cfg = type(cfg).from_dict({**cfg.to_dict(), "image_size": 128})
    write_checkpoint(tmp / "compact.safetensors", cfg, seed=0, std=0.02)
    export_onnx(tmp / "compact.safetensors", tmp / "compact.onnx")
    files = sorted(MAGNETIC_TILE.glob("test/*/*.jpg"))
    frames = [read_image(f) for f in files]
    report = {"machine": cpu_name(), "cpus": os.cpu_count(), "numpy": np.__version__,
              "model": "compact 128x128 fp32 ONNX Runtime CPU (random weights)", "images": len(files)}
    print(json.dumps(report), flush=True)
    http, grpc_port, metrics = free_ports(3)
    server = Server(tmp / "compact.onnx", tmp, http, grpc_port, metrics, extra=("--max-batch", "32")).start()
    report["server_ready_s"] = server.ready_s
    try:
        with dad_edge.Detector(tmp / "compact.onnx") as local, dad_edge.Detector(server.grpc_url) as remote:
            lr, rr = local(list(files)), remote(list(files))
        report["parity"] = {"images": len(files),
                            "max_abs_score_diff": max(abs(a.score - b.score) for a, b in zip(lr, rr)),
                            "max_abs_map_diff": max(float(np.abs(a.anomaly_map - b.anomaly_map).max())
                                                    for a, b in zip(lr, rr))}
        print(json.dumps(report["parity"]), flush=True)
        rows = [local_run(tmp / "compact.onnx", frames, a.seconds)]
        for n in (1, 4, 16):
            rows.append(clients_run(server.grpc_url, frames, n, a.seconds))
            print(json.dumps(rows[-1]), flush=True)
        report["throughput"] = rows
        expected = [float(s) for s in dad_edge.Detector(tmp / "compact.onnx", color_order="RGB").infer_batch(frames)[1]]
        report["load"] = load_run(server, frames, expected, a.load_seconds)
        print(json.dumps(report["load"]), flush=True)
    finally:
        server.kill()
    if not a.skip_train:
        from dad_edge.data.demo import build_demo_dataset

        data = build_demo_dataset(tmp / "data", size=64, n_train=64, n_test_good=4, n_test_per_defect=2)
        report["training"] = [train_run(data, tmp / f"train{n}", n, a.train_epochs) for n in (1, 2)]
        print(json.dumps(report["training"]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

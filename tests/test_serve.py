"""`dad-edge serve` end to end: a real Triton Inference Server (PyTriton) started as a subprocess on free
loopback ports, the remote Detector over gRPC and HTTP against the local Detector on the same ONNX file,
concurrent clients, malformed requests and a vanishing client (#17 part 4), a port already taken,
a server killed mid-stream and the stream's reconnect, SIGTERM. No part of Triton is mocked."""
from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dad_edge.artifacts import metadata as md
from dad_edge.model.config import preset
from tests.deploy_support import MAGNETIC_TILE, generated_image, write_checkpoint
from tests.serve_support import READY_TIMEOUT_S, Server, free_ports, require_serving

require_serving()
import tritonclient.grpc as grpcclient  # noqa: E402  (after the skip: may be absent)

import dad_edge  # noqa: E402
from dad_edge.errors import BackendError  # noqa: E402

N_IMAGES = 40  # the full 582 go through benchmarks/test_serving.py
TOL = 1e-5


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A tiny random model with thresholds (so labels and normalised scores exist), exported to ONNX."""
    from dad_edge.export.onnx_export import export_onnx

    tmp = tmp_path_factory.mktemp("serve_model")
    ckpt = write_checkpoint(tmp / "tiny.safetensors", preset("tiny"), seed=3,
                            thresholds=md.Thresholds(image=0.5, pixel=0.5, source="test"))
    export_onnx(ckpt, tmp / "tiny.onnx")
    return tmp / "tiny.onnx"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """N_IMAGES magnetic-tile test images (every defect folder), or generated ones without the shared data."""
    files = sorted(MAGNETIC_TILE.glob("test/*/*.jpg"))
    if files:
        return files[::max(1, len(files) // N_IMAGES)][:N_IMAGES]
    from dad_edge.data.imageio import write_image

    tmp, rng = tmp_path_factory.mktemp("serve_images"), np.random.default_rng(0)
    for i in range(N_IMAGES):
        write_image(tmp / f"{i:03d}.png", generated_image(rng, i % 2 == 1, shape=(40 + i, 48)))
    return sorted(tmp.glob("*.png"))


@pytest.fixture(scope="module")
def local(onnx_model):
    with dad_edge.Detector(onnx_model) as det:
        yield det


@pytest.fixture(scope="module")
def server(onnx_model, tmp_path_factory):
    http, grpc, metrics = free_ports(3)
    s = Server(onnx_model, tmp_path_factory.mktemp("serve_run"), http, grpc, metrics).start()
    yield s
    s.kill()


def assert_same(remote, local_results):
    assert len(remote) == len(local_results)
    for r, l in zip(remote, local_results):
        assert r.ok and r.source == l.source
        assert abs(r.score - l.score) <= TOL, r.source
        assert np.abs(r.anomaly_map - l.anomaly_map).max() <= TOL and r.anomaly_map.shape == l.anomaly_map.shape
        assert (r.label, r.normalized_score) == (l.label, pytest.approx(l.normalized_score, abs=TOL))


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_remote_detector_gives_the_local_results(server, local, images, scheme):
    with dad_edge.Detector(server.grpc_url if scheme == "grpc" else server.http_url) as remote:
        assert remote.backend.name == "triton" and remote.meta == local.meta
        assert remote.thresholds == local.thresholds
        assert remote.backend.server_info["model_name"] == "dad_edge"
        assert_same(remote(images), local(images))
        frame = np.random.default_rng(1).integers(0, 256, (37, 53, 3), np.uint8)  # BGR array, odd size
        assert abs(remote(frame).score - local(frame).score) <= TOL


def test_a_remote_detector_never_imports_torch(server):
    script = ("import sys, numpy as np, dad_edge\n"
              f"r = dad_edge.Detector({server.grpc_url!r})(np.zeros((30, 40, 3), np.uint8))\n"
              "print(r.score >= 0, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "False"], proc.stderr[-2000:]


def test_concurrent_clients_get_their_own_answers(server, local, images):
    """8 threads, each with its own Detector and its own images, several rounds: Triton batches their
    requests together (its metrics show fewer executions than requests), and no answer crosses over.
    Triton batches only requests of one shape (PyTriton has no ragged batching), so each thread's own
    random frames share one size, as the frames of one camera model do: they are the ones batched."""
    rng = np.random.default_rng(2)
    own = [[rng.integers(0, 256, (40, 44, 3), np.uint8) for _ in range(3)] + list(images[t::8])
           for t in range(8)]
    expected = [[r.score for r in local(frames)] for frames in own]
    got, errors = [None] * 8, []

    def client(t):
        try:
            with dad_edge.Detector(server.grpc_url, batch_size=1) as det:
                got[t] = [[r.score for r in det(own[t])] for _ in range(3)]
        except Exception as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert not errors, errors
    for t in range(8):
        for round_scores in got[t]:
            np.testing.assert_allclose(round_scores, expected[t], atol=TOL)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    requests = float(re.search(r'nv_inference_request_success\{model="dad_edge",version="1"\} (\S+)', metrics)[1])
    executions = float(re.search(r'nv_inference_exec_count\{model="dad_edge",version="1"\} (\S+)', metrics)[1])
    assert executions < requests, (executions, requests)


def _raw(client, frames, dtype="UINT8"):
    x = grpcclient.InferInput("frames", list(frames.shape), dtype)
    x.set_data_from_numpy(frames)
    return client.infer("dad_edge", [x], client_timeout=60)


def test_malformed_requests_are_refused_and_the_others_served(server, local, images):
    """#17 part 4: wrong dtype, wrong rank, empty batch, 2 channels, a huge frame, and a client killed
    mid-request, while 4 good clients keep sending: every bad one gets an error, every good one its answer."""
    stop, good, errors = threading.Event(), [], []
    expected = {str(p): r.score for p, r in zip(images, local(images))}

    def good_client():
        with dad_edge.Detector(server.grpc_url, batch_size=1) as det:
            while not stop.is_set():
                for r in det(images[:6]):
                    (good if abs(r.score - expected[r.source]) <= TOL else errors).append(r.source)

    threads = [threading.Thread(target=good_client) for _ in range(4)]
    for th in threads:
        th.start()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    refusals = []
    for frames, dtype in ((np.zeros((1, 20, 20, 3), np.float32), "FP32"), (np.zeros((1, 20, 20), np.uint8), "UINT8"),
                          (np.zeros((0, 20, 20, 3), np.uint8), "UINT8")):
        with pytest.raises(Exception) as info:  # Triton itself refuses these against the config
            _raw(client, frames, dtype)
        refusals.append(str(info.value))
    assert "FP32" in refusals[0] and "shape" in refusals[1]
    for frames, why in ((np.zeros((2, 20, 20, 2), np.uint8), "2 channels"),
                        (np.zeros((1, 8200, 8200, 1), np.uint8), "over the server's limit")):
        answer = _raw(client, frames)
        assert all(why in e.decode() for e in answer.as_numpy("error"))
    with dad_edge.Detector(server.grpc_url) as det, pytest.raises(BackendError, match="over the server's limit"):
        det(np.zeros((8200, 8200), np.uint8))
    # A client that vanishes mid-request: a big request, the process SIGKILLed while it is in flight.
    script = ("import numpy as np, tritonclient.grpc as g, sys\n"
              "c = g.InferenceServerClient(sys.argv[1]); x = g.InferInput('frames', [8, 2000, 2000, 3], 'UINT8')\n"
              "x.set_data_from_numpy(np.ones((8, 2000, 2000, 3), np.uint8)); print('sending', flush=True)\n"
              "c.infer('dad_edge', [x])\n")
    vanishing = subprocess.Popen([sys.executable, "-c", script, f"127.0.0.1:{server.grpc_port}"],
                                 stdout=subprocess.PIPE, text=True)
    assert vanishing.stdout.readline().strip() == "sending"
    time.sleep(0.3)  # the 96 MB request on its way or being scored
    vanishing.kill()
    vanishing.wait(30)
    n_before = len(good)
    with dad_edge.Detector(server.grpc_url) as det:
        assert abs(det(images[0]).score - expected[str(images[0])]) <= TOL
    stop.set()
    for th in threads:
        th.join(120)
    assert not errors and len(good) > n_before > 0
    assert client.is_server_live() and client.is_server_ready()


def test_under_numpy_2_without_a_serve_python_one_line_saying_so(onnx_model):
    """numpy 2 here and DAD_EDGE_SERVE_PYTHON unset: `serve` refuses in one line naming the variable,
    rather than a server that would answer with empty outputs (dad_edge/serving/relaunch.py)."""
    import os

    from dad_edge.serving import relaunch

    if relaunch.why_not_here() is None:
        pytest.skip("this Python can serve itself (numpy < 2 and nvidia-pytriton)")
    http, grpc = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k != relaunch.SERVE_PYTHON_ENV}
    proc = subprocess.run([sys.executable, "-m", "dad_edge", "serve", str(onnx_model), "--http-port", str(http),
                           "--grpc-port", str(grpc)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and not proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"numpy {np.__version__}" in proc.stderr and relaunch.SERVE_PYTHON_ENV in proc.stderr


def test_the_command_run_in_the_serve_python_is_the_one_given():
    """`serve` under numpy 2 re-executes itself from its parsed options (cli/serve.py server_argv): every
    option of the parser must come through, or the server would run with a default instead."""
    from dad_edge.cli import build_parser
    from dad_edge.cli.serve import server_argv

    parser = build_parser()
    given = parser.parse_args(["serve", "m.onnx", "--http-port", "1", "--grpc-port", "2", "--metrics-port", "3",
                               "--host", "0.0.0.0", "--max-batch", "4", "--queue-delay-us", "5", "--name", "n",
                               "--version", "6", "--device", "cpu"])
    assert vars(parser.parse_args(server_argv(given))) == vars(given)
    defaults = parser.parse_args(["serve", "m.onnx"])
    assert vars(parser.parse_args(server_argv(defaults))) == vars(defaults)
    # `given` sets every option of the serve parser away from its default: a new option must join it.
    serve_parser = parser._subparsers._group_actions[0].choices["serve"]
    options = {a.dest for a in serve_parser._actions if a.dest != "help"} - {"model"}
    assert options <= {k for k, v in vars(given).items() if v != getattr(defaults, k)}


def test_the_workspace_goes_where_the_sockets_fit(tmp_path, monkeypatch):
    """PyTriton's Unix socket paths hold 107 bytes: a deep TMPDIR (pytest's own folders) gave a server
    that said it was ready and answered nothing. The workspace then goes to /tmp; a --name too long
    for any folder is a ConfigError before anything starts."""
    import os
    import tempfile

    from dad_edge.errors import ConfigError
    from dad_edge.serving import server as srv

    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert srv.workspace_folder("dad_edge") == "/tmp"
    short = tempfile.mkdtemp(prefix="w", dir="/tmp")  # where the paths fit, the temporary folder is kept
    try:
        monkeypatch.setattr(tempfile, "tempdir", short)
        assert srv.workspace_folder("dad_edge") == short
    finally:
        os.rmdir(short)
    with pytest.raises(ConfigError, match="too long"):
        srv.workspace_folder("n" * 80)


def test_a_taken_port_is_one_line_before_anything_starts(onnx_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc = free_ports(1)[0]
        proc = subprocess.run([sys.executable, "-m", "dad_edge", "serve", str(onnx_model), "--http-port", str(port),
                               "--grpc-port", str(grpc)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]  # one line
    assert f"port {port} on 127.0.0.1 (--http-port) is taken" in proc.stderr


def test_killed_server_clear_error_then_the_stream_reconnects(onnx_model, images, tmp_path, caplog):
    """The server vanishes mid-stream (its process group SIGKILLed): a client that does not wait gets a
    BackendError naming the server; the stream (a folder source, as `dad-edge stream` runs it) retries
    and goes on once the server is back, every frame scored as the local model scores it."""
    import shutil

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, p in enumerate(images[:24]):
        shutil.copy(p, folder / f"{i:03d}{p.suffix}")
    with dad_edge.Detector(onnx_model) as det:
        expected = [r.score for r in det.stream(str(folder))]
    http, grpc = free_ports(2)
    s = Server(onnx_model, tmp_path, http, grpc).start()
    results = []
    try:
        with dad_edge.Detector(s.grpc_url + "?reconnect=180&timeout=20") as det, \
                caplog.at_level(logging.WARNING, logger="dad_edge.runtime.triton"):
            for r in det.stream(str(folder), batch=1):
                results.append(r.score)
                if len(results) == 8:
                    s.kill()
                    with pytest.raises(BackendError) as info:
                        dad_edge.Detector(s.grpc_url + "?reconnect=1")
                    assert f"Triton server grpc://127.0.0.1:{grpc}" in str(info.value)
                    assert "is `dad-edge serve` running there" in str(info.value)
                    threading.Timer(1.0, s.start).start()  # back while the stream waits
        np.testing.assert_allclose(results, expected, atol=TOL)
        retries = [m for m in caplog.messages if f"grpc://127.0.0.1:{grpc}" in m and "did not answer" in m]
        assert retries and any("answers again" in m for m in caplog.messages)
    finally:
        s.kill()


def test_a_detector_opened_while_the_server_starts_waits_for_it(onnx_model, images, local):
    """Opened the moment the server is launched, a remote Detector sees connection refused, then a
    server with no model yet, then models loading ("unknown model"): all of it is the server starting,
    retried within ?reconnect=, and the first answer is the local one."""
    http, grpc = free_ports(2)
    s = Server(onnx_model, Path(tempfile.gettempdir()), http, grpc)
    starting = threading.Thread(target=s.start)
    starting.start()
    try:
        with dad_edge.Detector(s.grpc_url + "?reconnect=240") as det:
            assert abs(det(images[0]).score - local(images[0]).score) <= TOL
    finally:
        starting.join(READY_TIMEOUT_S)
        s.kill()


def test_a_wrong_model_name_is_said_at_once(server):
    """A server that is up with other models: "unknown model" past the few seconds a starting server
    takes to register its models is the answer, not a reason to wait out ?reconnect=."""
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match="has no model 'nosuch'"):
        dad_edge.Detector(f"grpc://127.0.0.1:{server.grpc_port}/nosuch?reconnect=120")
    assert time.perf_counter() - t0 < 60


def test_sigterm_stops_the_server_cleanly(server):
    assert server.terminate() == 0
    assert any(line.startswith("serving ") for line in server.lines)
    assert any("stopped:" in line for line in server.lines), server.lines[-10:]

"""`dad-edge serve`: any model the Detector loads, served by NVIDIA Triton Inference Server through PyTriton.

    serve(ServeOptions(model="model.onnx", http_port=8000, grpc_port=8001, max_batch=32))

PyTriton starts a real `tritonserver` (HTTP, gRPC, metrics, health endpoints) whose Python backend
hands each dynamic batch of requests to FrameModel in this process; FrameModel runs them through
Detector.infer_batch, the same call every local scorer uses, so a remote score is the local one.
Triton's dynamic batcher joins requests whose frames have the same size (it batches one shape at a
time; PyTriton offers no ragged batching); a request of another size runs in its own batch. Frames are
resized here, per frame, as a local Detector resizes them. The wire format is
dad_edge/serving/protocol.py. Under numpy 2 PyTriton 0.7 cannot serve: see relaunch.py.

Order of start-up: ports checked (a clear error when one is taken), the model loaded, then the server
started: /v2/health/ready answers ready only once the model can score. SIGTERM and Ctrl-C stop the
server after the requests in flight (Triton's exit timeout), then the process exits 0.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.errors import BackendError, ConfigError
from dad_edge.serving import protocol as wire

log = logging.getLogger("dad_edge.serving")


@dataclass
class ServeOptions:
    model: str
    name: str = wire.DEFAULT_NAME
    version: int = 1
    host: str = "127.0.0.1"  # loopback unless told otherwise: a plant network is not the internet
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: Optional[int] = None  # None: no metrics endpoint
    max_batch: int = 32
    queue_delay_us: int = 2000  # how long Triton holds a request to batch it with others
    device: Optional[str] = None

    def ports(self) -> Dict[str, int]:
        named = {"--http-port": self.http_port, "--grpc-port": self.grpc_port}
        if self.metrics_port is not None:
            named["--metrics-port"] = self.metrics_port
        return named


class FrameModel:
    """The function Triton calls with a dynamic batch of requests: validated per request, run as one batch."""

    def __init__(self, detector):
        self.detector = detector
        self.thresholds = md.thresholds(detector.meta)
        self.requests = 0
        self.refused = 0

    def _answer(self, maps: np.ndarray, scores: np.ndarray) -> Dict[str, np.ndarray]:
        t = self.thresholds.image
        if t is None:
            normalized = np.full(scores.shape, np.nan, np.float32)
            label = np.full(scores.shape, wire.LABEL_NONE, np.int8)
        else:
            normalized = np.asarray(md.normalize_score(scores, t), np.float32)
            label = (scores >= t).astype(np.int8)
        return {"anomaly_map": np.ascontiguousarray(maps, np.float32), "score": scores.astype(np.float32),
                "normalized_score": normalized, "label": label, "error": np.full(scores.shape, b"", dtype=object)}

    def _refusal(self, n: int, why: str) -> Dict[str, np.ndarray]:
        s = self.detector.config.image_size
        out = self._answer(np.zeros((n, s, s), np.float32), np.zeros(n, np.float32))
        out["error"] = np.full(n, why.encode("utf-8"), dtype=object)
        return out

    def __call__(self, requests: List[Any]) -> List[Dict[str, np.ndarray]]:
        answers: List[Optional[Dict[str, np.ndarray]]] = [None] * len(requests)
        frames: List[np.ndarray] = []
        spans = []  # (request index, first frame, end): where each good request's frames sit in the batch
        for i, request in enumerate(requests):
            x = request[wire.FRAMES]
            why = wire.check_frames(x)
            self.requests += 1
            if why:
                self.refused += 1
                log.warning("refused a request: %s", why)
                answers[i] = self._refusal(max(len(x), 1), why)
                continue
            spans.append((i, len(frames), len(frames) + len(x)))
            frames.extend(x)
        if frames:
            maps, scores = self.detector.infer_batch(frames, "RGB")
            for i, a, b in spans:
                answers[i] = self._answer(maps[a:b], scores[a:b])
        return answers


def describe(detector, options: ServeOptions) -> Dict[str, Any]:
    """What the metadata model answers: enough for a client to build a Detector without the file."""
    t = md.thresholds(detector.meta)
    return {"protocol": wire.PROTOCOL_VERSION, "model_name": options.name, "model_version": options.version,
            "artifact": Path(options.model).name, "backend": detector.backend.name, "device": detector.backend.device,
            "max_batch": options.max_batch, "max_frame_pixels": wire.MAX_FRAME_PIXELS,
            "thresholds": t.to_dict(), "metadata": detector.meta}


def check_ports(options: ServeOptions) -> None:
    """Every port free on the host, and all different; else one ConfigError naming the port and the flag."""
    named = options.ports()
    if len(set(named.values())) != len(named):
        raise ConfigError(f"ports must differ: {', '.join(f'{k} {v}' for k, v in named.items())}")
    for flag, port in named.items():
        if not 0 < port < 65536:
            raise ConfigError(f"{flag} {port} is not a port number (1-65535)")
        with socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM) as s:
            # As tritonserver binds (SO_REUSEADDR): a port whose last server was killed a moment ago keeps
            # its connections in TIME_WAIT for a minute; they do not stop a restart, a listener does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((options.host, port))
            except OSError as exc:
                raise ConfigError(f"port {port} on {options.host} ({flag}) is taken or not available "
                                  f"({exc.strerror}); stop what uses it or pass another {flag}") from None


# PyTriton talks to Triton's Python backend over Unix sockets in its workspace, named after the models
# ("<name>_metadata_0_0-server.sock" the longest). A socket path holds at most 107 bytes, and a longer
# one fails inside the backend after tritonserver says it is up: the server would look ready and
# answer nothing. So the workspace goes where those paths fit: TMPDIR, else /tmp.
SOCKET_PATH_MAX = 107
WORKSPACE_PREFIX = "dad_edge_serve_"


def workspace_folder(name: str) -> str:
    """The folder to make the server's workspace in: the temporary folder if its paths fit, else /tmp."""
    inside = f"/{WORKSPACE_PREFIX}{'x' * 8}/pytriton/{wire.metadata_model(name)}_0_0-server.sock"
    candidates = list(dict.fromkeys([tempfile.gettempdir(), "/tmp"]))
    for folder in candidates:
        if len(os.fsencode(os.path.abspath(folder) + inside)) <= SOCKET_PATH_MAX:
            if folder != candidates[0]:
                log.info("the workspace goes to %s: PyTriton's sockets would not fit under %s", folder, candidates[0])
            return folder
    raise ConfigError(f"--name {name!r} is too long: PyTriton's socket paths hold {SOCKET_PATH_MAX} bytes "
                      f"(e.g. {os.path.abspath(candidates[-1]) + inside}); pick a shorter name")


def _import_pytriton():
    from dad_edge.serving import relaunch

    why = relaunch.why_not_here()
    if why:
        # Seen here: PyTriton 0.7 answers every request with empty outputs under numpy 2 (relaunch.py
        # says why), which would look like a working server that returns nothing.
        raise BackendError(f"dad-edge serve cannot run in this Python: {why}. Install 'dad_edge[serve]' in an "
                           f"environment with numpy<2, or name its interpreter in {relaunch.SERVE_PYTHON_ENV} "
                           "(the command line then runs the server there)")
    from pytriton import triton
    return triton


def _python_library_path() -> None:
    """Let Triton's Python-backend stub load this interpreter's libpython (pyenv, conda) rather than the
    system's, which would not see this environment's packages (the stub then fails on `import numpy`)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and any(Path(libdir).glob("libpython3*.so*")):
        current = os.environ.get("LD_LIBRARY_PATH", "")
        if libdir not in current.split(":"):
            os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def bind_models(triton, detector, options: ServeOptions) -> FrameModel:
    """The frame model (dynamic batching) and its metadata model on a PyTriton server."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    frame_model = FrameModel(detector)
    s = detector.config.image_size
    triton.bind(
        model_name=options.name, model_version=options.version, infer_func=frame_model,
        inputs=[Tensor(name=wire.FRAMES, dtype=np.uint8, shape=(-1, -1, -1))],
        outputs=[Tensor(name="anomaly_map", dtype=np.float32, shape=(s, s)),
                 Tensor(name="score", dtype=np.float32, shape=(-1,)),
                 Tensor(name="normalized_score", dtype=np.float32, shape=(-1,)),
                 Tensor(name="label", dtype=np.int8, shape=(-1,)),
                 Tensor(name="error", dtype=bytes, shape=(-1,))],
        config=ModelConfig(max_batch_size=options.max_batch,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us)),
        strict=False)
    text = json.dumps(describe(detector, options)).encode("utf-8")

    def metadata(requests):
        return [{wire.METADATA: np.array([text], dtype=object)} for _ in requests]

    triton.bind(model_name=wire.metadata_model(options.name), model_version=options.version, infer_func=metadata,
                inputs=[Tensor(name=wire.QUERY, dtype=np.uint8, shape=(1,))],
                outputs=[Tensor(name=wire.METADATA, dtype=bytes, shape=(1,))],
                config=ModelConfig(batching=False))
    return frame_model


def serve(options: ServeOptions, ready=print) -> int:
    """Run until SIGTERM / Ctrl-C; `ready` gets the one line said once the server answers ready."""
    from dad_edge.runtime.detector import Detector

    if options.max_batch < 1:
        raise ConfigError(f"--max-batch {options.max_batch} must be >= 1")
    if not re.match(r"^[A-Za-z0-9_.-]+$", options.name):
        raise ConfigError(f"--name {options.name!r}: a Triton model name takes letters, digits, '_', '.' and '-'")
    triton_module = _import_pytriton()
    workspace_parent = workspace_folder(options.name)
    check_ports(options)
    t0 = time.perf_counter()
    detector = Detector(options.model, device=options.device, batch_size=options.max_batch, color_order="RGB")
    detector.warmup(1)
    _python_library_path()
    # Triton's own log (tables of backends and models, a line per load) goes to a file in the
    # server's workspace, not the console; the workspace goes away at exit.
    workspace = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX, dir=workspace_parent))
    config = triton_module.TritonConfig(log_file=workspace / "tritonserver.log",
        http_address=options.host, http_port=options.http_port, grpc_address=options.host,
        grpc_port=options.grpc_port, allow_metrics=options.metrics_port is not None,
        metrics_address=options.host if options.metrics_port is not None else None,
        metrics_port=options.metrics_port, exit_timeout_secs=5, log_verbose=0)
    # SIGTERM (systemd, docker stop, kill) takes the same way out as Ctrl-C: PyTriton's serve loop
    # stops the server on KeyboardInterrupt, after the requests in flight.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with detector, triton_module.Triton(config=config, workspace=workspace / "pytriton") as triton:
            frame_model = bind_models(triton, detector, options)
            triton.run()  # returns once tritonserver is up and both models are loaded
            metrics = (f", metrics http://{options.host}:{options.metrics_port}/metrics"
                       if options.metrics_port is not None else "")
            ready(f"serving {options.model} as model {options.name!r} version {options.version} ({detector.backend.name} "
                  f"on {detector.backend.device}, max batch {options.max_batch}) on http://{options.host}:"
                  f"{options.http_port} and grpc://{options.host}:{options.grpc_port}{metrics}; ready in "
                  f"{time.perf_counter() - t0:.1f} s; Ctrl-C or SIGTERM to stop")
            try:
                triton.serve()
            except KeyboardInterrupt:
                pass
            log.info("stopped: %d requests, %d refused", frame_model.requests, frame_model.refused)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workspace, ignore_errors=True)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt

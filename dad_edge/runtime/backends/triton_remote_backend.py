"""Remote backend: a model served by `dad-edge serve` (Triton Inference Server), over tritonclient.

    Detector("grpc://gpu-box:8001/dad_edge")                  # or http://gpu-box:8000/dad_edge
    Detector("grpc://gpu-box:8001/dad_edge?timeout=5&reconnect=60&version=1")

The frames go to the server as they are (uint8, one request per frame size, colour reordered to
RGB: dad_edge/serving/protocol.py); the server pre-processes and runs the model exactly as a local
Detector would, and the Detector here maps the answer back to each frame's size and applies the
thresholds, so a Result is the local one. The model's metadata (size, thresholds, ...) comes from
the server's `<name>_metadata` model when the backend opens.

A server that does not answer (down, restarting, network gone) is retried, waiting 0.5 s and
doubling to 10 s, for up to `reconnect` seconds (default 30; 0 fails at once) with a fresh client
each time, each failure logged with the server's address; after that a BackendError names the
server. A request the server refuses (a frame too large, ...) is a BackendError at once. Query
options: timeout (seconds per request, default 30), reconnect (seconds, default 30), version.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Dict, List, Sequence, Tuple, Union
from urllib.parse import parse_qs

import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.errors import BackendError, ConfigError
from dad_edge.runtime.backends.base import Backend, by_order
from dad_edge.serving import protocol as wire

log = logging.getLogger("dad_edge.runtime.triton")

# Status codes of a server that is not there (yet) or did not answer in time: worth another try.
_RETRY_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "[503]", "[502]", "[504]")
# How long an "unknown model" answer may be a server still registering its models (_starting).
STARTUP_GRACE_S = 10.0
_OPTIONS = {"timeout": float, "reconnect": float, "version": int}


def _options(query: str, url: str) -> Dict[str, float]:
    out = {"timeout": 30.0, "reconnect": 30.0, "version": None}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in _OPTIONS:
            raise ConfigError(f"{url}: unknown option {key!r}; use {', '.join(sorted(_OPTIONS))}")
        try:
            out[key] = _OPTIONS[key](values[-1])
        except ValueError:
            raise ConfigError(f"{url}: option {key}={values[-1]!r} is not a number") from None
        if out[key] < 0 or (key == "timeout" and out[key] == 0):
            raise ConfigError(f"{url}: option {key}={values[-1]} must be positive")
    return out


def _retryable(exc: BaseException) -> bool:
    """A server that is away (refused, reset, timed out), as opposed to one that answered with an error."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        return any(code in str(exc.status()) or code in str(exc) for code in _RETRY_STATUS)
    return isinstance(exc, (OSError, TimeoutError)) or type(exc).__name__ in ("Timeout", "LoopExit")


class TritonRemoteBackend(Backend):
    name = "triton"

    def __init__(self, url: str, device=None, half: bool = False, fused=None, cuda_graphs: bool = False):
        if device is not None or half or fused or cuda_graphs:
            raise ConfigError(f"{url}: device, half, fused and cuda_graphs are the server's choice for a remote "
                              "model (dad-edge serve --device); leave them unset")
        try:
            scheme, host, port, model, query = wire.split_url(str(url))
        except ValueError as exc:
            raise ConfigError(f"{url}: {exc}") from None
        self.url = str(url).split("?")[0]
        self.device = f"{scheme}://{host}:{port}"  # where it runs, in words: the server
        self.scheme, self.address, self.model = scheme, f"{host}:{port}", model
        opts = _options(query, str(url))
        self.timeout_s, self.reconnect_s = opts["timeout"], opts["reconnect"]
        self.version = "" if opts["version"] is None else str(opts["version"])
        try:
            if scheme == "grpc":
                import tritonclient.grpc as client_module
            else:
                import tritonclient.http as client_module
        except ImportError:
            raise BackendError(f"{url}: a remote model needs tritonclient: pip install 'tritonclient[all]' "
                               "(or dad_edge[serve])") from None
        self._module = client_module
        self._client = None
        self._answered = False  # the model has answered here once: it lives on this server
        self._call_started = time.monotonic()
        described = self._call(self._describe)
        if described.get("protocol") != wire.PROTOCOL_VERSION:
            raise BackendError(f"{self.url}: the server speaks protocol {described.get('protocol')!r}, this client "
                               f"{wire.PROTOCOL_VERSION}; run the same dad_edge version on both sides")
        self.meta = md.validate_metadata(described["metadata"], self.url)
        self.max_batch = int(described["max_batch"])
        self.server_info = {k: v for k, v in described.items() if k != "metadata"}

    # -- connection ------------------------------------------------------------------------

    def _connect(self):
        if self._client is None:
            if self.scheme == "grpc":
                self._client = self._module.InferenceServerClient(self.address)
            else:
                self._client = self._module.InferenceServerClient(
                    self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
        return self._client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # a client of a dead connection may fail to close; it is dropped either way
                pass

    def _call(self, fn):
        """fn(client) with retries while the server is away, for up to reconnect_s seconds."""
        from tritonclient.utils import InferenceServerException

        if self._module is None:
            raise BackendError(f"{self.url}: this remote backend is closed (its Detector was closed); open it again")
        self._call_started = time.monotonic()
        deadline, delay, failures = self._call_started + self.reconnect_s, 0.5, 0
        while True:
            try:
                result = fn(self._connect())
            except Exception as exc:
                if not (_retryable(exc) or self._starting(exc)):
                    if isinstance(exc, (BackendError, ConfigError)):
                        raise
                    if isinstance(exc, InferenceServerException):
                        raise BackendError(f"{self.url}: the server refused the request: {exc.message()}") from None
                    raise
                self._drop_client()  # a fresh client (and channel) for the next try: no stale connection state
                failures += 1
                reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendError(f"Triton server {self.device} (model {self.model!r}) did not answer: {reason}; "
                                       f"gave up after {self.reconnect_s:g} s and {failures} tries: is `dad-edge "
                                       "serve` running there and the port reachable? (?reconnect=S waits longer)"
                                       ) from None
                log.warning("Triton server %s (model %r) did not answer: %s; trying again in %.1f s",
                            self.device, self.model, reason, min(delay, left))
                time.sleep(min(delay, left))
                delay = min(delay * 2, 10.0)
                continue
            if failures:
                log.warning("Triton server %s (model %r) answers again after %d failed tries",
                            self.device, self.model, failures)
            self._answered = True
            return result

    def _starting(self, exc: BaseException) -> bool:
        """An "unknown model" answer from a server that is (re)starting, as opposed to a wrong model name.

        tritonserver opens its ports about a second before PyTriton registers the models ("... is not
        found", the server ready with no model), then loads them one after the other ("... has no
        available versions", the server not ready): a client riding out a restart must wait through
        all of it. So: worth another try when this model has answered here before, while the server is
        not ready, while this model is ready and its metadata model not yet, and for the first
        STARTUP_GRACE_S of a call (the models not registered yet; PyTriton keeps the repository index
        to itself). Past that, on a server that is ready: a wrong name."""
        if "unknown model" not in str(exc):
            return False
        if self._answered or time.monotonic() - self._call_started < STARTUP_GRACE_S:
            return True
        try:
            client = self._connect()
            return not client.is_server_ready() or client.is_model_ready(self.model)
        except Exception:  # gone again meanwhile: away, worth another try
            return True

    def _describe(self, client) -> Dict:
        m = self._module
        query = m.InferInput(wire.QUERY, [1], "UINT8")
        query.set_data_from_numpy(np.zeros(1, np.uint8))
        kwargs = {"client_timeout": self.timeout_s} if self.scheme == "grpc" else {}
        try:
            result = client.infer(wire.metadata_model(self.model), [query], model_version=self.version, **kwargs)
        except Exception as exc:
            text = str(exc)
            if ("unknown model" in text or "not found" in text.lower()) and not self._starting(exc):
                raise BackendError(f"{self.url}: the server at {self.device} has no model {self.model!r} (or no "
                                   f"{wire.metadata_model(self.model)!r}: not a `dad-edge serve` server?)") from None
            raise
        return json.loads(result.as_numpy(wire.METADATA)[0])

    # -- inference ------------------------------------------------------------------------

    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        raise BackendError(f"{self.url}: a remote model takes frames (run), not pre-processed pixels: the server "
                           "pre-processes them")

    def _request(self, frames: np.ndarray):
        """One request of same-size frames (B, H, W, C) -> (maps (B, S, S), scores (B,))."""
        m = self._module
        x = m.InferInput(wire.FRAMES, list(frames.shape), "UINT8")
        x.set_data_from_numpy(frames)
        outputs = [m.InferRequestedOutput(n) for n in ("anomaly_map", "score", "error")]
        kwargs = {"client_timeout": self.timeout_s} if self.scheme == "grpc" else {}

        def send(client):
            return client.infer(self.model, [x], model_version=self.version, outputs=outputs, **kwargs)

        result = self._call(send)
        errors = [e for e in result.as_numpy("error") if e]
        if errors:
            raise BackendError(f"{self.url}: the server refused the request: {errors[0].decode('utf-8', 'replace')}")
        return result.as_numpy("anomaly_map"), result.as_numpy("score")

    prepares_on_host = False  # the server pre-processes: run sends uint8 frames

    def run(self, frames: Sequence[np.ndarray], color_order: Union[str, Sequence[str]]) -> Tuple[np.ndarray, np.ndarray]:
        """Frames of any sizes -> one request per frame size (at most max_batch frames each), answers in order."""
        frames = list(frames)
        wired: List[np.ndarray] = [None] * len(frames)
        for order, idx in by_order(color_order, len(frames)):
            for i in idx:
                wired[i] = wire.to_wire(frames[i], order)
        s = self.config.image_size
        maps = np.empty((len(frames), s, s), np.float32)
        scores = np.empty(len(frames), np.float32)
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for i, f in enumerate(wired):
            groups.setdefault(f.shape, []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.max_batch):
                part = idx[start:start + self.max_batch]
                maps[part], scores[part] = self._request(np.stack([wired[i] for i in part]))
        return maps, scores

    def close(self) -> None:
        self._drop_client()
        self._module = None

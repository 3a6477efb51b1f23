"""The wire format between `dad-edge serve` and the remote Detector backend; no torch, no Triton here.

Model `<name>` (dynamic batching, max_batch_size from --max-batch):
    input  frames            UINT8 (B, H, W, C)  one frame size per request; C = 1 (gray) or 3 (RGB)
    output anomaly_map       FP32  (B, S, S)     probabilities at the model's size S (the client resizes back)
           score             FP32  (B,)          the image score (top-k mean of the map)
           normalized_score  FP32  (B,)          the score mapped piecewise-linearly so that the threshold is 0.5; NaN
                                                 when the model has no thresholds
           label             INT8  (B,)          1 anomalous, 0 good, -1 no thresholds
           error             BYTES (B,)          b"" for a frame that was scored, else why the request was refused

A request that Triton lets through but that we cannot run (a channel count other than 1/3, a frame
over MAX_FRAME_PIXELS) is answered, not raised: PyTriton fails every request of a dynamic batch when
the function raises, so one bad client would fail the others batched with it. Its rows carry the
message in `error` and zeros elsewhere; our client raises BackendError with it. Wrong dtypes, ranks
and empty batches never reach the function: Triton refuses them against the config.

Model `<name>_metadata` (no batching): input query UINT8 (1,) (ignored), output metadata BYTES (1,), a
JSON object: the model's dad_edge metadata, its name and version, thresholds, limits (see server.py).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

DEFAULT_NAME = "dad_edge"
PROTOCOL_VERSION = 1
METADATA_SUFFIX = "_metadata"
FRAMES = "frames"
OUTPUTS = ("anomaly_map", "score", "normalized_score", "label", "error")
QUERY, METADATA = "query", "metadata"
CHANNELS = (1, 3)
MAX_FRAME_PIXELS = 64 * 1024 * 1024  # 8192 x 8192: far above any camera; a request above it is refused
LABEL_NONE = -1  # label of a frame when the model has no image threshold


def metadata_model(name: str) -> str:
    return name + METADATA_SUFFIX


def to_wire(frame: np.ndarray, color_order: str) -> np.ndarray:
    """A validated (H, W, C) uint8 frame in `color_order` -> (H, W, 1 or 3) gray or RGB, what the server takes.

    Only a reorder of channels (and the alpha channel dropped, as pre-processing drops it), so the
    server's pre-processing sees exactly the numbers a local Detector would: scores agree bit for bit."""
    if frame.shape[2] == 1:
        return frame
    if color_order == "BGR":
        return np.ascontiguousarray(frame[:, :, 2::-1])
    return np.ascontiguousarray(frame[:, :, :3])


def check_frames(frames: np.ndarray) -> str:
    """'' when a request's frames (B, H, W, C) can be run, else what is wrong with them (one line)."""
    if frames.dtype != np.uint8 or frames.ndim != 4:
        return f"frames must be uint8 (B, H, W, C); got {frames.dtype} {tuple(frames.shape)}"
    b, h, w, c = frames.shape
    if b == 0 or h == 0 or w == 0:
        return f"frames of shape {tuple(frames.shape)} are empty"
    if c not in CHANNELS:
        return f"frames have {c} channels; send 1 (gray) or 3 (RGB)"
    if h * w > MAX_FRAME_PIXELS:
        return f"a {h} x {w} frame is over the server's limit of {MAX_FRAME_PIXELS} pixels; downscale it first"
    return ""


def split_url(url: str) -> Tuple[str, str, int, str, str]:
    """'grpc://host:8001/name?timeout=5' -> (scheme, host, port, model name, query string); ValueError if malformed."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("grpc", "http") or not parts.hostname or parts.port is None:
        raise ValueError("expected grpc://HOST:PORT/MODEL or http://HOST:PORT/MODEL")
    name = parts.path.strip("/")
    if not name or "/" in name:
        raise ValueError("the path must be the model name alone, as in grpc://HOST:PORT/dad_edge")
    return parts.scheme, parts.hostname, parts.port, name, parts.query

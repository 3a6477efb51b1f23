"""The remote Detector backend without a server: URLs and options, the wire conversion, and a server that
is not there (real tritonclient against a closed loopback port: refused connections, retries, the error
that names the server). The end-to-end tests against a real `dad-edge serve` are in test_serve.py."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'tritonclient[all]')")

import dad_edge  # noqa: E402
from dad_edge.errors import BackendError, ConfigError  # noqa: E402
from dad_edge.serving import protocol as wire  # noqa: E402
from tests.serve_support import free_ports  # noqa: E402


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_no_server_is_a_backend_error_naming_it(scheme, caplog):
    port = free_ports(1)[0]  # nothing listens there
    url = f"{scheme}://127.0.0.1:{port}/dad_edge"
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="dad_edge.runtime.triton"), \
            pytest.raises(BackendError) as info:
        dad_edge.Detector(url + "?reconnect=0.6&timeout=5")
    message = str(info.value)
    assert message.startswith(f"Triton server {scheme}://127.0.0.1:{port} (model 'dad_edge') did not answer")
    assert "gave up after 0.6 s" in message and "is `dad-edge serve` running there" in message
    retries = [m for m in caplog.messages if f"{scheme}://127.0.0.1:{port}" in m and "trying again" in m]
    assert len(retries) >= 1  # waited and tried again before giving up
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("url, what", [
    ("grpc://127.0.0.1/dad_edge", "grpc://HOST:PORT/MODEL"),  # no port
    ("grpc://127.0.0.1:8001/", "model name"),
    ("grpc://127.0.0.1:8001/a/b", "model name"),
    ("grpc://127.0.0.1:8001/dad_edge?retries=3", "unknown option 'retries'"),
    ("grpc://127.0.0.1:8001/dad_edge?timeout=soon", "timeout='soon' is not a number"),
    ("grpc://127.0.0.1:8001/dad_edge?timeout=0", "must be positive"),
])
def test_malformed_urls_are_config_errors(url, what):
    with pytest.raises(ConfigError, match=what.replace("?", r"\?").replace("(", r"\(")):
        dad_edge.Detector(url)


def test_local_options_are_refused_for_a_served_model():
    with pytest.raises(ConfigError, match="server's choice"):
        dad_edge.Detector("grpc://127.0.0.1:8001/dad_edge", device="cuda")
    with pytest.raises(BackendError, match="served model"):
        dad_edge.Detector("grpc://127.0.0.1:8001/dad_edge", backend="onnxruntime")


def test_wire_frames_keep_every_pixel():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (5, 7, 3), np.uint8)
    assert np.array_equal(wire.to_wire(bgr, "BGR"), bgr[:, :, ::-1])
    assert np.array_equal(wire.to_wire(bgr, "RGB"), bgr)
    bgra = rng.integers(0, 256, (5, 7, 4), np.uint8)
    assert np.array_equal(wire.to_wire(bgra, "BGR"), bgra[:, :, 2::-1])  # alpha dropped, as pre-processing does
    gray = rng.integers(0, 256, (5, 7, 1), np.uint8)
    assert wire.to_wire(gray, "BGR") is gray


def test_check_frames_names_what_is_wrong():
    assert wire.check_frames(np.zeros((2, 4, 4, 3), np.uint8)) == ""
    assert "2 channels" in wire.check_frames(np.zeros((1, 4, 4, 2), np.uint8))
    assert "empty" in wire.check_frames(np.zeros((0, 4, 4, 3), np.uint8))
    assert "float32" in wire.check_frames(np.zeros((1, 4, 4, 3), np.float32))
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (1, 9000, 9000, 1), (0, 0, 0, 0))  # no memory
    assert "over the server's limit" in wire.check_frames(huge)

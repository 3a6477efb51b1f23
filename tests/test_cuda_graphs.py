"""Detector(cuda_graphs=True): the torch backend's network part replayed from CUDA graphs.

Without a GPU: the option's errors (CPU device, non-torch model, CPU tensors into a graph).
With one: results equal to the eager path for the plain and fused graphs, fp32 and fp16, over
batches of changing sizes (one capture per size, later calls replay), and the LRU bound.
"""
import numpy as np
import pytest
import torch

import dad_edge
from dad_edge.runtime.backends.cuda_graphs import GraphedCall
from dad_edge.cli import main as cli_main
from dad_edge.model.config import preset
from dad_edge.errors import BackendError, ConfigError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.data.imageio import write_image
from deploy_support import write_checkpoint

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("graphs") / "m.safetensors", preset("tiny", smoothing_sigma=1.0),
                            seed=5, std=0.15)


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 3 * i, 50, 3), dtype=np.uint8) for i in range(n)]


def test_cuda_graphs_need_a_cuda_device(ckpt):
    with pytest.raises(BackendError, match="cuda_graphs=True needs a CUDA device"):
        dad_edge.Detector(ckpt, device="cpu", cuda_graphs=True)
    assert dad_edge.Detector(ckpt, device="cpu").backend.graphed is None  # off by default


def test_cuda_graphs_are_a_torch_backend_option(ckpt, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(ckpt, onnx_path)
    with pytest.raises(ConfigError, match="cuda_graphs=True applies to the torch backend"):
        dad_edge.Detector(onnx_path, cuda_graphs=True)


def test_cli_predict_reports_the_option_error(ckpt, tmp_path, capsys):
    frame = tmp_path / "f.png"
    write_image(frame, _frames(1)[0])
    code = cli_main(["predict", str(ckpt), str(frame), "--device", "cpu", "--cuda-graphs"])
    assert code != 0 and "cuda_graphs=True needs a CUDA device" in capsys.readouterr().err


def test_graphed_call_takes_cuda_tensors_only():
    graphed = GraphedCall(lambda x: x * 2)
    with pytest.raises(BackendError, match="CUDA tensors only"):
        graphed(torch.zeros(2, 3))
    assert graphed.captures == 0 and len(graphed) == 0
    with pytest.raises(ValueError, match="max_graphs"):
        GraphedCall(lambda x: x, max_graphs=0)


@needs_cuda
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_graphs_match_the_eager_path(ckpt, fused, half):
    eager = dad_edge.Detector(ckpt, device="cuda", fused=fused, half=half, batch_size=8)
    graphed = dad_edge.Detector(ckpt, device="cuda", fused=fused, half=half, batch_size=8, cuda_graphs=True)
    for i, n in enumerate([3, 1, 3, 2, 1]):  # sizes 3, 1 and 2: three captures, two replays of old ones
        frames = _frames(n, seed=i)
        for a, b in zip(eager(frames), graphed(frames)):
            assert a.ok and b.ok
            assert np.abs(a.anomaly_map - b.anomaly_map).max() <= 1e-5 and abs(a.score - b.score) <= 1e-5
    assert graphed.backend.graphed.captures == 3 and len(graphed.backend.graphed) == 3
    # Results handed out earlier are copies: a later call does not change them.
    first = graphed(_frames(2, seed=10))
    kept = [r.anomaly_map.copy() for r in first]
    graphed(_frames(2, seed=11))
    assert all(np.array_equal(k, r.anomaly_map) for k, r in zip(kept, first))


@needs_cuda
def test_graph_cache_keeps_the_most_recent_signatures():
    calls = []

    def double(x):
        calls.append(x.shape[0])
        return x * 2

    graphed = GraphedCall(double, max_graphs=2)
    for b in (1, 2, 1, 3, 1, 2):
        x = torch.full((b, 4), float(b), device="cuda")
        assert torch.equal(graphed(x), x * 2)
    # 1, 2 captured; 1 reused; 3 evicts 2 (least recently used); 1 reused; 2 captured again.
    assert graphed.captures == 4 and len(graphed) == 2

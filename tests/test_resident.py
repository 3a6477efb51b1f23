"""Detector(resident=True) (runtime/resident.py): uint8 frames through fixed buffers, two batches in flight.

On the CPU the resident path runs without pinning, streams or graphs: it must give the plain path's
numbers for every method, fall back for batches it does not take (mixed shapes or colour orders),
reuse its buffers, and keep submit / collect honest (two in flight per shape, each collected once).
double_buffer.collected is held to its order and error rules. With a GPU: pinned buffers, two
streams, graphs captured per slot, and the same numbers as the eager path.
"""
import numpy as np
import pytest
import torch

import dad_edge
from dad_edge.errors import BackendError, ConfigError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import preset
from dad_edge.runtime.double_buffer import collected
from dad_edge.runtime.resident import ResidentPipeline
from deploy_support import write_checkpoint

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned buffers, CUDA streams and graphs "
                                "need a CUDA GPU")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resident")
    return {method: write_checkpoint(folder / f"{method}.safetensors",
                                     preset("tiny", smoothing_sigma=1.0, method=method), seed=5, std=0.15)
            for method in ("diffusionad", "seg")}


def _frames(n, shape=(40, 50, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("method,fused", [("diffusionad", False), ("diffusionad", True), ("seg", None)])
def test_resident_path_gives_the_plain_paths_numbers(models, method, fused):
    frames = _frames(7)  # batch 3: two full batches and a batch of one, each its own buffers
    with dad_edge.Detector(models[method], device="cpu", fused=fused, batch_size=3) as plain, \
            dad_edge.Detector(models[method], device="cpu", fused=fused, batch_size=3, resident=True) as resident:
        assert resident.backend.resident is not None and resident.backend.in_flight == 2
        assert not resident.backend.prepares_on_host
        m0, s0 = plain.infer_batch(frames)
        m1, s1 = resident.infer_batch(frames)
        np.testing.assert_allclose(m1, m0, atol=1e-6)
        np.testing.assert_allclose(s1, s0, atol=1e-6)
        pipeline = resident.backend.resident
        assert sorted(k[0] for k in pipeline._shapes) == [1, 3]  # the shapes it built buffers for
        assert pipeline.in_flight() == 0  # every batch collected
        # The stream's path (run_items through predict) too, results in order.
        r0, r1 = plain.predict(frames), resident.predict(frames)
        assert [r.score for r in r1] == pytest.approx([r.score for r in r0], abs=1e-6)
        assert all(r.anomaly_map.shape == f.shape[:2] for r, f in zip(r1, frames))


def test_batches_it_does_not_take_run_the_plain_way(models):
    frames = _frames(2) + _frames(1, shape=(30, 30, 3), seed=1)
    with dad_edge.Detector(models["diffusionad"], device="cpu", batch_size=4) as plain, \
            dad_edge.Detector(models["diffusionad"], device="cpu", batch_size=4, resident=True) as resident:
        _, s0 = plain.infer_batch(frames)
        _, s1 = resident.infer_batch(frames)  # mixed sizes
        np.testing.assert_allclose(s1, s0, atol=1e-6)
        _, s2 = resident.infer_batch(frames[:2], ["RGB", "BGR"])  # mixed colour orders
        np.testing.assert_allclose(s2, plain.infer_batch(frames[:2], ["RGB", "BGR"])[1], atol=1e-6)
        assert len(resident.backend.resident._shapes) == 0  # neither went through the resident buffers


def test_buffers_are_allocated_once_per_shape_and_reused(models):
    with dad_edge.Detector(models["seg"], device="cpu", batch_size=2, resident=True) as det:
        pipeline = det.backend.resident
        det.infer_batch(_frames(2))
        slots = next(iter(pipeline._shapes.values()))
        pointers = [(s.host_in.data_ptr(), s.host_out.data_ptr()) for s in slots]
        for seed in range(3):
            det.infer_batch(_frames(4, seed=seed))
        assert [(s.host_in.data_ptr(), s.host_out.data_ptr()) for s in slots] == pointers
        assert len(pipeline._shapes) == 1


def _pipeline(cfg_size=8, max_shapes=4):
    """A ResidentPipeline over a forward whose result tells which frames it saw: map = the frames' mean
    broadcast, score = the first pixel of each frame."""
    def forward(frames, color_order):
        b = frames.shape[0]
        x = frames.float().reshape(b, -1)
        maps = x.mean(dim=1).reshape(b, 1, 1, 1).expand(b, 1, cfg_size, cfg_size)
        return maps, x[:, 0] + (1000.0 if color_order == "RGB" else 0.0)
    return ResidentPipeline(forward, cfg_size, "cpu", max_shapes=max_shapes)


def test_two_batches_in_flight_each_get_their_own_results():
    pipeline = _pipeline()
    a, b = _frames(2, seed=1), _frames(2, seed=2)
    ta, tb = pipeline.submit(a, "BGR"), pipeline.submit(b, "BGR")
    assert pipeline.in_flight() == 2 and ta.slot is not tb.slot
    with pytest.raises(BackendError, match="2 batches of shape .* are in flight; collect one"):
        pipeline.submit(_frames(2, seed=3), "BGR")
    maps_b, scores_b = pipeline.collect(tb)  # out of order is fine: each ticket has its slot
    maps_a, scores_a = pipeline.collect(ta)
    assert scores_a.tolist() == [float(f.reshape(-1)[0]) for f in a]
    assert scores_b.tolist() == [float(f.reshape(-1)[0]) for f in b]
    assert maps_a.shape == (2, 8, 8) and maps_a[1, 3, 3] == pytest.approx(float(a[1].mean()), rel=1e-6)
    with pytest.raises(BackendError, match="collected already"):
        pipeline.collect(ta)
    assert pipeline.run(a, "RGB")[1].tolist() == [1000.0 + float(f.reshape(-1)[0]) for f in a]


def test_shapes_beyond_the_limit_release_the_least_recently_used_idle_one():
    pipeline = _pipeline(max_shapes=2)
    for width in (10, 11, 12):
        pipeline.run(_frames(1, shape=(9, width, 3)), "BGR")
    assert [k[2] for k in pipeline._shapes] == [11, 12]
    busy = pipeline.submit(_frames(1, shape=(9, 11, 3)), "BGR")
    pipeline.run(_frames(1, shape=(9, 13, 3)), "BGR")  # 12 was idle and least recently used
    assert [k[2] for k in pipeline._shapes] == [11, 13]
    pipeline.collect(busy)


def test_a_resident_batch_must_be_one_shape():
    with pytest.raises(BackendError, match="one shape"):
        _pipeline().submit(_frames(1) + _frames(1, shape=(9, 9, 3)), "BGR")
    assert not ResidentPipeline.accepts([], [])
    assert not ResidentPipeline.accepts(_frames(2), ["RGB", "BGR"])


def test_resident_is_a_torch_option(models, tmp_path):
    onnx = tmp_path / "m.onnx"
    export_onnx(models["seg"], onnx)
    with pytest.raises(ConfigError, match="resident=True applies to the torch and tensorrt backends; .* onnxruntime"):
        dad_edge.Detector(onnx, resident=True)
    with pytest.raises(BackendError, match="CUDA graphs need a CUDA device"):
        ResidentPipeline(lambda f, o: None, 8, "cpu", graphs=True)


def test_run_batches_reads_ahead_unless_told_not_to(models):
    from dad_edge.runtime.inputs import Item

    frames = _frames(6)
    with dad_edge.Detector(models["seg"], device="cpu", batch_size=2, resident=True) as det:
        for ahead, pulled_before_first in ((True, 2), (False, 1)):
            pulled = []

            def batches():
                for i in range(0, 6, 2):
                    pulled.append(i)
                    yield [Item(f"f{j}", array=frames[j]) for j in (i, i + 1)]

            out = det.run_batches(batches(), ahead=ahead)
            first = next(out)
            # ahead: batch 2 was submitted before batch 1's results came back (two in flight); a live
            # camera's call (ahead=False) never takes a batch before the previous one is answered.
            assert len(pulled) == pulled_before_first
            rest = [r for results in out for r in results]
            assert [r.source for r in first + rest] == [f"f{j}" for j in range(6)]
        expected = det.predict(frames)
        assert [r.score for r in first + rest] == pytest.approx([r.score for r in expected], abs=1e-6)


def test_cli_takes_resident(models, tmp_path, capsys):
    import json

    from dad_edge.cli import main as cli_main
    from dad_edge.data.imageio import write_image

    frame = tmp_path / "f.png"
    write_image(frame, _frames(1)[0])
    onnx = tmp_path / "m.onnx"
    export_onnx(models["seg"], onnx)
    assert cli_main(["predict", str(onnx), str(frame), "--resident"]) != 0
    assert "resident=True applies to the torch and tensorrt backends" in capsys.readouterr().err
    out = tmp_path / "bench.json"
    assert cli_main(["benchmark", str(models["seg"]), "--device", "cpu", "--resident", "--seconds", "0.2",
                     "--warmup", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["resident"] is True and report["rows"][0]["images_per_s"] > 0


# -- collected: submit ahead, collect in order ---------------------------------------------------

def test_collected_submits_ahead_and_yields_in_order():
    events = []

    def handles():
        for i in range(3):
            events.append(f"submit {i}")
            yield i

    def collect(i):
        events.append(f"collect {i}")
        return i * 10

    assert list(collected(handles(), collect, depth=2)) == [0, 10, 20]
    assert events == ["submit 0", "submit 1", "collect 0", "submit 2", "collect 1", "collect 2"]
    events.clear()
    assert list(collected(handles(), collect, depth=1)) == [0, 10, 20]
    assert events == ["submit 0", "collect 0", "submit 1", "collect 1", "submit 2", "collect 2"]
    with pytest.raises(ValueError):
        list(collected([], collect, depth=0))


def test_collected_yields_what_was_submitted_before_an_error():
    def handles():
        yield 1
        raise RuntimeError("batch 2 is unreadable")

    out = collected(handles(), lambda h: h, depth=2)
    assert next(out) == 1
    with pytest.raises(RuntimeError, match="unreadable"):
        next(out)


def test_collected_still_collects_what_a_caller_leaves_behind():
    done = []
    out = collected(iter(range(4)), lambda h: done.append(h) or h, depth=2)
    assert next(out) == 0  # handles 0 and 1 pulled, 0 collected
    out.close()  # the caller stops: 1 is collected anyway, so its buffers are free
    assert done == [0, 1]


# -- on a GPU ---------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_resident_on_cuda_matches_the_eager_path(models, graphs):
    frames = _frames(6)
    with dad_edge.Detector(models["diffusionad"], device="cuda", batch_size=3) as eager, \
            dad_edge.Detector(models["diffusionad"], device="cuda", batch_size=3, resident=True,
                              cuda_graphs=graphs) as resident:
        m0, s0 = eager.infer_batch(frames)
        for _ in range(2):  # the second pass replays
            m1, s1 = resident.infer_batch(frames)
            np.testing.assert_allclose(m1, m0, atol=1e-4)
            np.testing.assert_allclose(s1, s0, atol=1e-4)
        pipeline = resident.backend.resident
        slots = next(iter(pipeline._shapes.values()))
        assert all(s.host_in.is_pinned() and s.host_out.is_pinned() for s in slots)
        assert slots[0].stream != slots[1].stream
        assert pipeline.captures == (2 if graphs else 0)  # one per slot of the one shape, not per call

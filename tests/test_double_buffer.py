"""Double buffering (runtime/double_buffer.py): the next batch is prepared on a worker thread while
this one runs, results in order, errors where the sequential loop raises them; the Detector's calls
over many batches give the same numbers either way, on a real ONNX Runtime session."""
import importlib.util
import threading

import numpy as np
import pytest

import dad_edge
from dad_edge.errors import DadEdgeError, DataError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import preset
from dad_edge.runtime.double_buffer import double_buffered
from dad_edge.runtime.inputs import Item
from deploy_support import generated_image, write_checkpoint


def test_results_in_order_and_equal_to_the_plain_loop():
    prepare, run = (lambda c: c * 10), (lambda p: p + 1)
    for n in (0, 1, 2, 7):
        assert list(double_buffered(range(n), prepare, run)) == [c * 10 + 1 for c in range(n)]
        assert list(double_buffered(range(n), prepare, run, enabled=False)) == [c * 10 + 1 for c in range(n)]


def test_the_next_chunk_is_prepared_while_this_one_runs():
    # run(chunk 0) waits for prepare(chunk 1) to have started: only a pipelined loop gets there.
    started = {i: threading.Event() for i in range(3)}
    run_threads, overlapped, timeout = set(), [], [5.0]

    def prepare(i):
        started[i].set()
        return i

    def run(i):
        run_threads.add(threading.get_ident())
        if i + 1 in started:
            overlapped.append(started[i + 1].wait(timeout=timeout[0]))
        return i

    assert list(double_buffered(range(3), prepare, run)) == [0, 1, 2]
    assert overlapped == [True, True]
    assert run_threads == {threading.get_ident()}  # a backend is used from the caller's thread only
    for e in started.values():
        e.clear()
    overlapped.clear()
    timeout[0] = 0.2  # the plain loop prepares chunk i+1 only after run(i): each wait times out
    assert list(double_buffered(range(3), prepare, run, enabled=False)) == [0, 1, 2]
    assert overlapped == [False, False]


def test_a_single_chunk_runs_on_the_callers_thread():
    # A live stream calls the Detector once per batch: nothing to overlap, so no worker thread (and its start-up).
    threads = []
    assert list(double_buffered([5], lambda c: threads.append(threading.get_ident()) or c, lambda p: p)) == [5]
    assert threads == [threading.get_ident()]
    threads.clear()
    list(double_buffered([5, 6], lambda c: threads.append(threading.get_ident()) or c, lambda p: p))
    assert threading.get_ident() not in threads


def test_a_preparation_error_comes_after_the_earlier_results():
    def prepare(i):
        if i == 2:
            raise DataError("chunk 2 is unreadable")
        return i

    got = []
    with pytest.raises(DataError, match="chunk 2"):
        for r in double_buffered(range(4), prepare, lambda p: p):
            got.append(r)
    assert got == [0, 1]


def test_a_run_error_propagates_and_the_worker_is_released():
    def run(i):
        if i == 1:
            raise RuntimeError("backend failed")
        return i

    with pytest.raises(RuntimeError, match="backend failed"):
        list(double_buffered(range(5), lambda c: c, run))
    gen = double_buffered(range(5), lambda c: c, lambda p: p)
    assert next(gen) == 0
    gen.close()  # a consumer that stops early: the pending preparation is waited for, no thread left behind
    assert not [t for t in threading.enumerate() if t.name.startswith("dad_edge-prepare")]


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("db")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", method="seg"))
    export_onnx(ckpt, tmp / "m.onnx")
    return tmp / "m.onnx"


def _frames(n):
    rng = np.random.default_rng(0)
    return [generated_image(rng, i % 3 == 0, shape=(40 + 4 * i, 48)) for i in range(n)]


def test_detector_gives_the_same_numbers_pipelined_or_not(onnx_model):
    frames = _frames(9)
    with dad_edge.Detector(onnx_model, batch_size=2, pipeline=True) as det, \
            dad_edge.Detector(onnx_model, batch_size=2, pipeline=False) as plain:
        assert det.pipeline and not plain.pipeline
        maps, scores = det.infer_batch(frames, "RGB")
        ref_maps, ref_scores = plain.infer_batch(frames, "RGB")
        sized, _ = det.infer_batch(frames, "RGB", frame_size=True)
    np.testing.assert_array_equal(maps, ref_maps)
    np.testing.assert_array_equal(scores, ref_scores)
    assert [m.shape for m in sized] == [f.shape[:2] for f in frames]


def test_detector_prepares_on_a_worker_thread_and_runs_the_backend_on_the_callers(onnx_model):
    frames = _frames(6)
    for pipeline in (True, False):
        with dad_edge.Detector(onnx_model, batch_size=2, pipeline=pipeline) as det:
            seen = {"prepare": [], "infer": []}
            prepare, infer = det.backend.prepare, det.backend.infer
            det.backend.prepare = lambda *a: (seen["prepare"].append(threading.current_thread().name), prepare(*a))[1]
            det.backend.infer = lambda x: (seen["infer"].append(threading.current_thread().name), infer(x))[1]
            det.infer_batch(frames, "RGB")
        main = threading.current_thread().name
        assert len(seen["prepare"]) == len(seen["infer"]) == 3
        assert set(seen["infer"]) == {main}
        workers = [t for t in seen["prepare"] if t != main]
        assert (len(workers) == 3) if pipeline else not workers


def test_run_items_keeps_order_and_bad_items_across_batches(onnx_model):
    frames = _frames(7)
    items = [Item(f"f{i}", array=f) for i, f in enumerate(frames)]
    items[3] = Item("broken", array=np.zeros((0, 5, 3), np.uint8))  # in the second batch
    with dad_edge.Detector(onnx_model, batch_size=2, color_order="RGB", pipeline=True) as det:
        results = list(det.run_items(items))
        ok = [i for i in range(7) if i != 3]
        _, scores = det.infer_batch([frames[i] for i in ok], "RGB")
        with pytest.raises(DadEdgeError, match="broken"):
            list(det.run_items(items, strict=True))
    assert [r.source for r in results] == [it.name for it in items]
    assert results[3].error and "broken" in results[3].error
    np.testing.assert_allclose([results[i].score for i in ok], scores, rtol=0, atol=0)
    assert all(r.speed["preprocess"] > 0 and r.speed["inference"] > 0 for r in results if r.error is None)


def test_a_backend_that_prepares_on_its_device_runs_whole(tmp_path):
    # The fused torch path pre-processes on its device (here the CPU forms of its kernels): nothing is split off.
    ckpt = write_checkpoint(tmp_path / "d.safetensors", preset("tiny"))
    frames = _frames(5)
    with dad_edge.Detector(ckpt, device="cpu", fused=True, batch_size=2, pipeline=True) as det, \
            dad_edge.Detector(ckpt, device="cpu", fused=True, batch_size=2, pipeline=False) as plain:
        assert det.backend.prepares_on_host is False
        maps, scores = det.infer_batch(frames, "RGB")
        ref_maps, ref_scores = plain.infer_batch(frames, "RGB")
    np.testing.assert_array_equal(scores, ref_scores)
    np.testing.assert_array_equal(maps, ref_maps)


def test_on_by_default_off_the_host_cpu_only(onnx_model, tmp_path):
    # A CPU backend's own threads fill the cores (benchmarks/README.md, session 27: 0.93-1.05x on 2 cores), so the
    # automatic choice leaves it off there; a GPU backend (TensorRT, CUDA providers, torch on cuda) gets it.
    with dad_edge.Detector(onnx_model) as ort_cpu:
        assert ort_cpu.backend.device == "CPUExecutionProvider" and ort_cpu.pipeline is False
    if importlib.util.find_spec("openvino") is not None:
        with dad_edge.Detector(onnx_model, backend="openvino") as ov:
            assert ov.pipeline is False
    ckpt = write_checkpoint(tmp_path / "s.safetensors", preset("tiny", method="seg"))
    with dad_edge.Detector(ckpt, device="cpu") as torch_cpu:
        assert torch_cpu.pipeline is False
    with dad_edge.Detector(ckpt, device="cpu", pipeline=True) as forced:
        assert forced.pipeline is True
    try:
        import torch
        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if gpu:
        with dad_edge.Detector(ckpt, device="cuda") as on_gpu:
            assert on_gpu.pipeline is True

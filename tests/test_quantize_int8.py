"""INT8 ONNX (export/quantize.py): QDQ around the networks' layers only, loads in the Detector,
scores that follow fp32, clear errors for a bad calibration folder."""
from collections import deque

import numpy as np
import onnx
import pytest

import dad_edge
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.imageio import read_image
from dad_edge.errors import ConfigError, DataError
from dad_edge.export.metadata_io import read_metadata
from dad_edge.export.onnx_export import export_onnx
from dad_edge.export.quantize import CALIBRATION_BATCH, quantize_onnx
from dad_edge.model.config import preset
from dad_edge.training.train import TrainOptions, train
from deploy_support import sample_images, write_category, write_checkpoint

QDQ = ("QuantizeLinear", "DequantizeLinear")
# The tiny preset's layers at the networks' edges, which read or write image-space tensors.
EDGE_LAYERS = {"/model/conv_in/Conv", "/model/conv_out/Conv", "/model/segnet/encoder.0/encoder.0.0/Conv",
               "/model/segnet/head/Conv"}
READS_IMAGES = {"/model/conv_in/Conv", "/model/segnet/encoder.0/encoder.0.0/Conv"}  # x_t; cat(x, x0_ng)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny"))
    export_onnx(ckpt, tmp / "m.onnx")
    category = write_category(tmp / "cat", n_train=16)
    meta = quantize_onnx(tmp / "m.onnx", tmp / "m.int8.onnx", category, max_images=12)
    return {"tmp": tmp, "ckpt": ckpt, "fp32": tmp / "m.onnx", "int8": tmp / "m.int8.onnx", "meta": meta,
            "category": category}


def _unquantised_reach(graph):
    """Nodes reached from the input (forward) or from the outputs (backward) without passing a
    Conv/MatMul (or a Shape, which reads no values): the pre- and post-processing."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    seen, stop = {}, ("Conv", "MatMul", "Shape")
    todo = deque((t, True) for t in [i.name for i in graph.input])
    todo.extend((o.name, False) for o in graph.output)
    while todo:
        tensor, forward = todo.popleft()
        nodes = consumers.get(tensor, []) if forward else [producer[tensor]] if tensor in producer else []
        for n in nodes:
            if n.op_type in stop or n.name in seen:
                continue
            seen[n.name] = n
            todo.extend((t, forward) for t in (n.output if forward else n.input))
    return seen


def test_qdq_around_the_networks_layers_only(files):
    graph = onnx.load(str(files["int8"])).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    reads_q = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantised = {n.name for n in convs if producer.get(n.input[0]) == "DequantizeLinear"
                 and producer.get(n.input[1]) == "DequantizeLinear"}
    assert {n.name for n in convs} - quantised == EDGE_LAYERS
    assert len(quantised) >= 30
    for n in convs:
        if n.name in EDGE_LAYERS:  # float weights, float out, and float in where the input is image-space:
            assert producer.get(n.input[1]) not in QDQ and n.output[0] not in reads_q, n.name  # nothing
            if n.name in READS_IMAGES:  # image-space is rounded (the others read the net's own features)
                assert producer.get(n.input[0]) not in QDQ, n.name
    # The attention products stay float (quantised, they ran slower: export/quantize.py's doc).
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert matmuls and not [n.name for n in matmuls if any(producer.get(i) in QDQ for i in n.input)]
    # Normalisation, noise, combine, sigmoid and top-k score: no quantisation step on the way.
    reach = _unquantised_reach(graph)
    assert {"TopK", "Sigmoid", "Concat", "Mul", "Add"} <= {n.op_type for n in reach.values()}
    assert not [n.name for n in reach.values() if n.op_type in QDQ]
    assert not [n.name for n in reach.values() if any(producer.get(i) == "DequantizeLinear" for i in n.input)]


def _runtime_graph(path, tmp_path):
    """The graph ONNX Runtime runs for `path`: its QDQ fusions applied (level "extended"; "all" adds the
    CPU's own layout steps on top)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.runtime.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath).graph


def _float_steps_between_integer_convs(graph):
    """Relu / MaxPool / Concat nodes that read a DequantizeLinear and feed a QuantizeLinear (or another
    such step): float work, with a dequantise before and a quantise after, between two integer layers."""
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return [n.name for n in graph.node if n.op_type in ("Relu", "MaxPool", "Concat")
            and n.input and all(producer.get(i) in ("DequantizeLinear", "Relu", "MaxPool") for i in n.input)]


def test_integer_path_between_the_segmentation_nets_convs(files, tmp_path):
    # conv-BN-ReLU, max-pool, concatenation: with only the convolutions quantised, each Relu, MaxPool and Concat
    # of the segmentation net ran in float between a DequantizeLinear and a QuantizeLinear, and INT8 was slower
    # than fp32 on the seg method (benchmarks/README.md, session 27). Now ONNX Runtime runs them on uint8.
    int8 = _runtime_graph(files["int8"], tmp_path)
    ops = [n.op_type for n in int8.node]
    assert "QLinearConv" in ops and "QLinearConcat" in ops
    assert "Relu" not in ops  # folded into the integer convolutions' output ranges
    assert not _float_steps_between_integer_convs(int8)
    assert sum(n.op_type == "Relu" for n in onnx.load(str(files["fp32"])).graph.node) >= 10  # what there was to fold
    # The pre- and post-processing Concat (cat(x, x0_ng)) is not on the integer path: it reads float tensors.
    graph = onnx.load(str(files["int8"])).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    reach = _unquantised_reach(graph)
    assert [n for n in reach.values() if n.op_type == "Concat"]
    assert not [n.name for n in reach.values() if any(producer.get(i) in QDQ for i in n.input)]


def test_seg_method_quantises_and_follows_fp32(tmp_path):
    # The CPU default (method "seg", the segmentation net alone), trained a few seconds so that its scores mean
    # something: its first layer and head stay float, the rest is one integer path, and INT8 ranks the demo's
    # test images as fp32 does.
    data = build_demo_dataset(tmp_path / "data", size=64, n_train=12, n_test_good=4, n_test_per_defect=3)
    ckpt = train(TrainOptions(data=str(data), out=str(tmp_path / "run"), preset="tiny", model_overrides={"method": "seg"},
                              epochs=12, batch_size=4, lr_seg=0.01, device="cpu", progress=False))
    export_onnx(ckpt, tmp_path / "seg.onnx")
    meta = quantize_onnx(tmp_path / "seg.onnx", tmp_path / "seg.int8.onnx", data, max_images=12)
    floats = meta["quantization"]["float_layers"]  # once per map stride: the recipe reads the net at two scales
    assert floats and all(f.split("/")[-2].split("_")[0] in ("encoder.0.0", "head") for f in floats), floats
    runtime = _runtime_graph(tmp_path / "seg.int8.onnx", tmp_path)
    assert "Relu" not in [n.op_type for n in runtime.node] and not _float_steps_between_integer_convs(runtime)
    frames = [read_image(p) for p in sorted((data / "test").rglob("*.png"))]
    with dad_edge.Detector(tmp_path / "seg.onnx") as ref, dad_edge.Detector(tmp_path / "seg.int8.onnx") as det:
        ref_maps, ref_scores = ref.infer_batch(frames, "RGB")
        maps, scores = det.infer_batch(frames, "RGB")
    assert not np.array_equal(scores, ref_scores)
    # The scores of this briefly trained net span little (0.23-0.27), so rounding moves their order more than
    # a trained model's (magnetic tile: AUROC within 0.002 of fp32, benchmarks/README.md); the maps are close.
    assert np.corrcoef(scores, ref_scores)[0, 1] > 0.9
    assert np.corrcoef(maps.ravel(), ref_maps.ravel())[0, 1] > 0.99 and np.abs(maps - ref_maps).max() < 0.1


def test_metadata_travels_and_records_int8(files):
    meta = read_metadata(files["int8"])
    fp32 = read_metadata(files["fp32"])
    assert meta["export"]["precision"] == "int8" and meta["export"]["int8"] is True
    assert meta["export"]["calibration_images"] == 12 and meta["quantization"]["calibration_images"] == 12
    assert meta["quantization"]["format"] == "QDQ" and meta["quantization"]["float_layers"] == sorted(EDGE_LAYERS)
    assert meta["quantization"]["quantised_ops"] == ["Conv"]
    assert meta["quantization"]["integer_path_nodes"] == files["meta"]["quantization"]["integer_path_nodes"] > 0
    assert meta["model"] == fp32["model"] and meta["thresholds"] == fp32["thresholds"]
    with pytest.raises(ConfigError, match="already int8"):
        quantize_onnx(files["int8"], files["tmp"] / "again.onnx", files["category"])


def test_loads_in_the_detector_and_follows_fp32(files):
    frames = [read_image(p) for p, _ in sample_images(files["tmp"])]
    with dad_edge.Detector(files["fp32"]) as ref, dad_edge.Detector(files["int8"]) as det:
        assert det.backend.name == "onnxruntime" and det.meta["export"]["precision"] == "int8"
        ref_maps, ref_scores = ref.infer_batch(frames, "RGB")
        maps, scores = det.infer_batch(frames, "RGB")
        result = det(frames[0])
    assert result.anomaly_map.shape == frames[0].shape[:2]
    assert not np.array_equal(scores, ref_scores)  # it is quantised, not the fp32 graph again
    # A broken quantisation (wrong scales, a layer skipped on the way) decorrelates these.
    assert np.corrcoef(scores, ref_scores)[0, 1] > 0.95
    assert np.corrcoef(maps.ravel(), ref_maps.ravel())[0, 1] > 0.95
    assert np.abs(maps - ref_maps).max() < 0.05


def test_every_calibration_batch_counts(files, tmp_path):
    # 32 images: four batches of CALIBRATION_BATCH. With onnxruntime's CalibMaxIntermediateOutputs at 4, the
    # calibrator dropped every four batches unmerged and failed here with "No data is collected".
    category = write_category(tmp_path / "cat", n_train=32)
    meta = quantize_onnx(files["fp32"], tmp_path / "m.int8.onnx", category, max_images=32)
    assert meta["quantization"]["calibration_images"] == 32 == 4 * CALIBRATION_BATCH


def test_bad_calibration_folder(files, tmp_path):
    with pytest.raises(DataError, match="missing.*no such folder"):
        quantize_onnx(files["fp32"], tmp_path / "x.onnx", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images found"):
        quantize_onnx(files["fp32"], tmp_path / "x.onnx", tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped"), pytest.raises(DataError, match="none of its 3 images could be read"):
        quantize_onnx(files["fp32"], tmp_path / "x.onnx", bad)
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_int8(files, tmp_path, capsys):
    out = tmp_path / "cli.int8.onnx"
    code = main(["export", str(files["ckpt"]), "--format", "onnx", "--int8", "--calib",
                 str(files["category"] / "train" / "good"), "--calib-count", "8", "--out", str(out)])
    assert code == 0 and "int8" in capsys.readouterr().out
    assert read_metadata(out)["export"]["calibration_images"] == 8
    assert main(["export", str(files["ckpt"]), "--format", "onnx", "--int8", "--calib", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "y.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope: no such folder" in err
    assert main(["export", str(files["ckpt"]), "--format", "onnx", "--int8", "--out", str(tmp_path / "z.onnx")]) == 2
    assert "--calib" in capsys.readouterr().err


def test_openvino_runs_the_int8_file(files):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'dad_edge[openvino]')")
    frames = [read_image(p) for p, _ in sample_images(files["tmp"])]
    with dad_edge.Detector(files["int8"]) as ort_int8, dad_edge.Detector(files["int8"], backend="openvino") as ov_int8:
        maps, scores = ov_int8.infer_batch(frames, "RGB")
        ref_maps, ref_scores = ort_int8.infer_batch(frames, "RGB")
    # Two INT8 implementations round differently here and there: close, not equal.
    assert np.corrcoef(scores, ref_scores)[0, 1] > 0.95
    assert np.abs(maps - ref_maps).max() < 0.05


def test_op_profile_names_the_integer_kernels_and_times_both_files(files, tmp_path, capsys):
    # benchmarks/ort_op_profile.py: the profiler's per-operator sums come from the sessions the
    # Detector would open (the QDQ pairs fused into QLinearConv), and both files get a timing row.
    from training_support import benchmark_module

    profile = benchmark_module("ort_op_profile")
    assert profile.main([str(files["fp32"]), str(files["int8"]), "--runs", "2", "--rounds", "1",
                         "--profile-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    fp32_part, int8_part = out.split(f"{files['int8'].name}: kernels")[0], out.split(f"{files['int8'].name}: kernels")[1]
    assert " Conv " in fp32_part and "QLinearConv" not in fp32_part
    assert "QLinearConv" in int8_part.split("interleaved")[0]
    rows = [line for line in out.splitlines() if " p50 " in line]
    assert len(rows) == 2 and rows[0].rstrip().endswith(f"1.00x {files['fp32'].name}")
    assert len(list(tmp_path.glob("*.json"))) == 2  # ONNX Runtime's profile files, where they were asked for
    with pytest.raises(SystemExit):
        profile.main([str(tmp_path / "missing.onnx")])
    assert "missing.onnx" in capsys.readouterr().err

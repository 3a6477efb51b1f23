"""Detector.from_module (a model in memory, no file) and detector_thresholds: training's threshold
step scores as the deployed Detector does, with the maps at each frame's own size as calibrate."""
import numpy as np
import pytest
import torch

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import save_model
from dad_edge.data.imageio import read_image
from dad_edge.errors import BackendError, ConfigError, DataError, InputError
from dad_edge.export.calibrate import calibrate
from dad_edge.model.config import preset
from dad_edge.runtime.detector import map_at_frame_size
from dad_edge.training.thresholds import detector_thresholds, quantile_thresholds
from deploy_support import generated_image, random_model, write_category

Detector = dad_edge.Detector


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random tiny gray model, the same model saved as a checkpoint, and good frames of several sizes."""
    tmp = tmp_path_factory.mktemp("thr")
    cfg = preset("tiny", channels=1)
    model = random_model(cfg, seed=6, std=0.15)
    ckpt = tmp / "m.safetensors"
    save_model(ckpt, model, md.build_metadata(cfg))
    rng = np.random.default_rng(3)
    frames = [generated_image(rng, False, shape) for shape in [(48, 40)] * 5 + [(32, 32), (20, 70), (64, 64)]]
    return model, ckpt, frames, tmp


def test_from_module_scores_as_the_checkpoint(setup):
    model, ckpt, frames, _ = setup
    with Detector(ckpt, device="cpu") as by_file, Detector.from_module(model) as in_memory:
        assert repr(in_memory).startswith("Detector(<in-memory module>, backend=torch on cpu")
        for frame_size in (False, True):
            m_file, s_file = by_file.infer_batch(frames, "RGB", frame_size=frame_size)
            m_mem, s_mem = in_memory.infer_batch(frames, "RGB", frame_size=frame_size)
            assert np.array_equal(s_file, s_mem)
            assert all(np.array_equal(a, b) for a, b in zip(m_file, m_mem))
        assert s_file.std() > 1e-4  # the random model tells frames apart


def test_infer_batch_at_frame_size(setup):
    model, _, frames, _ = setup
    with Detector.from_module(model, batch_size=3) as det:
        small, scores = det.infer_batch(frames, "RGB")
        big, scores2 = det.infer_batch(frames, "RGB", frame_size=True)
        results = det(frames, color_order="RGB")
    assert small.shape == (len(frames), 32, 32) and np.array_equal(scores, scores2)
    assert [m.shape for m in big] == [f.shape[:2] for f in frames]
    for m, s, r, f in zip(small, big, results, frames):
        assert np.array_equal(s, map_at_frame_size(m, f.shape))
        assert np.array_equal(s, r.anomaly_map)  # what a Result carries, and what thresholds see
    # The frame-size maxima are not the model-size ones: the convention matters.
    assert any(s.max() != m.max() for m, s in zip(small, big))


def test_from_module_leaves_the_training_model_as_it_was(setup):
    cfg = preset("tiny", channels=1)
    model = random_model(cfg, seed=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = generated_image(np.random.default_rng(0), False)
    with Detector.from_module(model, md.build_metadata(cfg)) as det:
        assert not model.training  # eval mode while it scores
        det(frame, color_order="RGB")
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # Its tensors stay usable for training (no_grad, not inference_mode).
    model(torch.zeros(1, 1, 32, 32)).score.sum().backward()
    assert any(p.grad is not None for p in model.parameters())
    with pytest.raises(ConfigError, match="closed"):
        det.infer_batch([frame], "RGB")
    det.close()  # a second close does nothing


def test_from_module_errors(setup):
    model, _, _, _ = setup
    with pytest.raises(BackendError, match="DiffusionAD"):
        Detector.from_module(torch.nn.Identity())
    with pytest.raises(BackendError, match="config differs"):
        Detector.from_module(model, md.build_metadata(preset("tiny", channels=3)))
    with pytest.raises(BackendError, match="CUDA|module is on"):
        Detector.from_module(model, device="cuda" if not torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="color_order"):
        Detector.from_module(model, color_order="HSV")


def test_detector_thresholds_are_the_detectors_quantiles(setup):
    model, ckpt, frames, _ = setup
    with Detector.from_module(model) as det:
        t = detector_thresholds(det, frames, 0.9)
    results = Detector(ckpt, device="cpu")(frames, color_order="RGB")
    assert t.image == pytest.approx(np.quantile([r.score for r in results], 0.9), abs=1e-7)
    assert t.pixel == pytest.approx(np.quantile([r.anomaly_map.max() for r in results], 0.9), abs=1e-7)
    assert t.source == "quantile of held-out good images (q=0.9)"
    # About 10 % of the good frames are above the image threshold: the thresholds apply to these scores.
    flagged = [r.score >= t.image for r in results]
    assert 1 <= sum(flagged) <= 2


def test_detector_thresholds_bad_input(setup):
    model, _, frames, _ = setup
    with Detector.from_module(model) as det:
        with pytest.raises(DataError, match="none"):
            detector_thresholds(det, [], 0.99)
        with pytest.raises(InputError, match="threshold frame 1: got dtype float32"):
            detector_thresholds(det, [frames[0], frames[1].astype(np.float32)], 0.99)
        with pytest.raises(ValueError, match="quantile=1.5"):
            detector_thresholds(det, frames, 1.5)
        with pytest.raises(ConfigError, match="color_order"):
            detector_thresholds(det, frames, 0.99, color_order="HSV")


def test_calibrate_and_training_thresholds_agree(setup):
    """One convention: `dad-edge calibrate` on a folder of good images gives what
    detector_thresholds gives on the same images in memory."""
    _, ckpt_src, _, tmp = setup
    category = write_category(tmp / "category", n_train=6)
    ckpt = tmp / "calibrated.safetensors"
    ckpt.write_bytes(ckpt_src.read_bytes())
    folder = category / "train" / "good"
    stored = calibrate(ckpt, folder, quantile=0.95)
    frames = [read_image(p) for p in sorted(folder.glob("*.png"))]
    with Detector(ckpt_src, device="cpu") as det:
        mine = detector_thresholds(det, frames, 0.95)
        maps, scores = det.infer_batch(frames, "RGB", frame_size=True)
    assert (stored.image, stored.pixel) == (mine.image, mine.pixel)
    assert mine == quantile_thresholds(scores, maps, 0.95)

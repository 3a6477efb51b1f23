"""Distillation (issue #7): two-pass and single-pass students of a tiny teacher.

One tiny teacher is trained once for the module; students are distilled for an epoch or
two on a 32x32 demo set. The numbers are not the point here (benchmarks/ measures them):
the students must be ordinary checkpoints, the single-pass one must run one U-Net pass,
and the student must learn the teacher.
"""
import json

import numpy as np
import pytest
import torch

from dad_edge.artifacts import checkpoint as ckpt
from dad_edge.cli import main
from dad_edge.model.config import preset
from dad_edge.data.demo import build_demo_dataset
from dad_edge.training.distill import Distiller, DistillOptions, config_hash, distill
from dad_edge.errors import ConfigError
from dad_edge.model.info import model_info
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.training.train import TrainOptions, train
from training_support import DIFFUSIONAD


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return train(TrainOptions(data=str(data), out=str(out), preset="tiny", epochs=1, batch_size=4, progress=False,
                              model_overrides=DIFFUSIONAD))


def _opts(teacher, data, out, **kw):
    base = dict(teacher=str(teacher), data=str(data), out=str(out), preset="tiny", epochs=1, batch_size=4,
                progress=False)
    return DistillOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def students(teacher, data, tmp_path_factory):
    """{"two_pass": path, "single_pass": path}, each distilled for 2 epochs."""
    paths = {}
    for single in (False, True):
        out = tmp_path_factory.mktemp("single" if single else "two")
        paths["single_pass" if single else "two_pass"] = distill(
            _opts(teacher, data, out, single_pass=single, epochs=2, lr_unet=1e-3, lr_seg=1e-3))
    return paths


def _unet_batches(model: DiffusionAD, x: torch.Tensor):
    """Batch sizes that entered the U-Net during model(x): one entry per U-Net pass."""
    seen = []
    handle = model.unet.conv_in.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        handle.remove()
    return seen, out


@pytest.mark.parametrize("kind", ["two_pass", "single_pass"])
def test_students_are_ordinary_checkpoints(students, teacher, kind):
    model, meta = ckpt.load_model(students[kind])
    tmodel, _ = ckpt.load_model(teacher)
    assert model.cfg.denoiser == kind
    # The diffusion recipe is the teacher's; the networks are the student preset's.
    for name in ("num_timesteps", "t_small", "t_large", "guidance_w", "noise_seed", "image_size", "channels"):
        assert getattr(model.cfg, name) == getattr(tmodel.cfg, name), name
    x = torch.rand(3, model.cfg.channels, 32, 32) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.anomaly_map.shape == (3, 1, 32, 32) and out.score.shape == (3,)
    assert torch.isfinite(out.anomaly_map).all()
    # Thresholds are calibrated on held-out good images, as in training.
    assert meta["thresholds"]["image"] is not None and "held-out good" in meta["thresholds"]["source"]


@pytest.mark.parametrize("kind", ["two_pass", "single_pass"])
def test_checkpoint_records_the_teacher(students, teacher, kind):
    _, meta = ckpt.read_tensors(students[kind])
    rec = meta["distillation"]
    tcfg = ckpt.load_model(teacher)[0].cfg
    assert rec["teacher"]["path"] == str(teacher.resolve())
    assert rec["teacher"]["config_hash"] == config_hash(tcfg)
    assert rec["teacher"]["preset"] == "tiny"
    assert rec["denoiser"] == kind and rec["segmentation"] == "train"
    assert meta["training"]["options"]["teacher"] == str(teacher)
    assert meta["training"]["epochs"] == 2


def test_single_pass_runs_one_unet_pass_and_costs_fewer_flops(students):
    single, _ = ckpt.load_model(students["single_pass"])
    two, _ = ckpt.load_model(students["two_pass"])
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert _unet_batches(single, x)[0] == [3]  # one pass over the batch
    assert _unet_batches(two, x)[0] == [6]  # t_s and t_l batched as 2B
    info1, info2 = model_info(single.cfg), model_info(two.cfg)
    assert info1["unet_passes"] == 1 and info2["unet_passes"] == 2
    assert info1["gflops"] < info2["gflops"]
    assert info1["gflops_unet"] == pytest.approx(info2["gflops_unet"] / 2, rel=1e-6)
    assert info1["gflops_seg"] == pytest.approx(info2["gflops_seg"])


def test_single_pass_forward_is_the_clamped_one_pass_x0(students):
    model, _ = ckpt.load_model(students["single_pass"])
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    t = torch.full((2,), model.cfg.t_small)
    with torch.no_grad():
        x0 = model.single_pass_x0(x, t, model.noise[0]).clamp(-1, 1)
        seg_in = torch.cat([x, x0], dim=1)
        expected = torch.sigmoid(model.segnet(seg_in))
        if model.recon_term is not None:  # the default recipe's map term, on the same x0
            expected = model.recon_term(expected, seg_in)
        out = model(x)
    torch.testing.assert_close(out.anomaly_map, expected, rtol=1e-5, atol=1e-6)


def test_reconstruct_refuses_a_single_pass_model():
    model = DiffusionAD(preset("tiny", channels=1, denoiser="single_pass"))
    x = torch.zeros(2, 1, 32, 32)
    t = torch.tensor([10, 20])
    with pytest.raises(ConfigError, match="single_pass"):
        model.reconstruct(x, t, t + 300, x, x)


def test_denoiser_is_validated_and_defaults_to_two_pass():
    with pytest.raises(ConfigError, match="denoiser"):
        preset("tiny", denoiser="three_pass")
    d = preset("tiny").to_dict()
    del d["denoiser"]  # files written before the field existed
    assert type(preset("tiny")).from_dict(d).denoiser == "two_pass"


@pytest.mark.parametrize("single_pass", [False, True], ids=["two_pass", "single_pass"])
def test_student_learns_the_teacher_on_a_fixed_batch(teacher, data, tmp_path, single_pass):
    d = Distiller(_opts(teacher, data, tmp_path, single_pass=single_pass, lr_unet=2e-3, lr_seg=1e-3))
    # A one-epoch tiny teacher still predicts almost zero noise (zero-initialised output convs):
    # perturb it so that its predictions are a real target.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in d.teacher.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p.device))  # the teacher is on CUDA if any
    batch = next(d.train.epoch(0))
    losses = []
    for _ in range(12):
        terms = d._loss(batch, torch.Generator().manual_seed(0))  # same noise and timesteps each step
        d.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        d.optimizer.step()
        losses.append(float(terms.noise.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    # The teacher is frozen: eval mode, no gradients.
    assert not d.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in d.teacher.parameters())


def test_segmentation_distill_adds_the_teacher_map_term(teacher, data, tmp_path):
    d = Distiller(_opts(teacher, data, tmp_path, segmentation="distill"))
    batch = next(d.train.epoch(0))
    terms = d._loss(batch, torch.Generator().manual_seed(0))
    assert float(terms.seg_distill) > 0
    assert float(terms.total) == pytest.approx(float(terms.noise + 5 * terms.focal + terms.smooth_l1
                                                     + terms.seg_distill), rel=1e-5)


def test_student_at_another_image_size(teacher, data, tmp_path):
    path = distill(_opts(teacher, data, tmp_path, image_size=64, single_pass=True))
    model, meta = ckpt.load_model(path)
    assert model.cfg.image_size == 64
    assert model.cfg.top_k == 4 * ckpt.load_model(teacher)[0].cfg.top_k  # same density of top-k pixels
    assert meta["distillation"]["teacher"]["image_size"] == 32
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).anomaly_map.shape == (1, 1, 64, 64)


def test_resume_goes_on_and_checks_the_teacher(teacher, data, tmp_path):
    out = tmp_path / "run"
    distill(_opts(teacher, data, out, single_pass=True))
    state = ckpt.read_tensors(out / "train_state.safetensors")[1]["train_state"]
    assert state["epoch"] == 1
    distill(_opts(teacher, data, out, single_pass=True, epochs=2, resume=True))
    _, meta = ckpt.read_tensors(out / "train_state.safetensors")
    assert meta["train_state"]["epoch"] == 2 and len(meta["train_state"]["history"]) == 2
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    # Another teacher (another noise seed) must not silently continue this run.
    other = train(TrainOptions(data=str(data), out=str(tmp_path / "other"), preset="tiny", epochs=1, batch_size=4,
                               progress=False, model_overrides={**DIFFUSIONAD, "noise_seed": 1}))
    with pytest.raises(ConfigError, match="teacher"):
        distill(_opts(other, data, out, single_pass=True, epochs=3, resume=True))
    # Nor a resume in the other mode.
    with pytest.raises(ConfigError, match="different model config"):
        distill(_opts(teacher, data, out, single_pass=False, epochs=3, resume=True))


def test_a_single_pass_model_is_refused_as_teacher(students, data, tmp_path):
    with pytest.raises(ConfigError, match="single_pass"):
        distill(_opts(students["single_pass"], data, tmp_path))


def test_cli_distill_end_to_end(teacher, data, tmp_path, capsys):
    out = tmp_path / "student"
    rc = main(["distill", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--preset", "tiny",
               "--single-pass", "--segmentation", "distill", "--epochs", "1", "--batch-size", "4", "--quiet"])
    assert rc == 0
    assert f"model: {out / 'model.safetensors'}" in capsys.readouterr().out
    _, meta = ckpt.read_tensors(out / "model.safetensors")
    assert meta["model"]["denoiser"] == "single_pass" and meta["distillation"]["segmentation"] == "distill"
    # `dad-edge eval` takes the student unchanged.
    assert main(["eval", str(out / "model.safetensors"), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= metrics["image_auroc"] <= 1


def test_cli_bad_teacher_path_exits_2_naming_it(data, tmp_path, capsys):
    missing = tmp_path / "no_such_teacher.safetensors"
    rc = main(["distill", "--teacher", str(missing), "--data", str(data), "--out", str(tmp_path / "s"),
               "--epochs", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_single_pass_model_exports_to_onnx_and_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = DiffusionAD(preset("tiny", channels=3, denoiser="single_pass")).eval()
    with torch.no_grad():  # perturb the zero-initialised convs so that every layer matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "single.onnx"
    torch.onnx.export(model, (torch.zeros(2, 3, 32, 32),), str(path), input_names=["image"],
                      output_names=["anomaly_map", "score"], dynamic_axes={"image": {0: "batch"}}, dynamo=False)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_map, got_score = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert ref.anomaly_map.std() > 1e-3  # a non-trivial map
    np.testing.assert_allclose(got_map, ref.anomaly_map.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_score, ref.score.numpy(), atol=1e-4)


def test_detector_takes_a_student(students):
    from dad_edge import Detector

    det = Detector(students["single_pass"], backend="torch", device="cpu")
    result = det(np.full((40, 48), 128, np.uint8))
    assert 0 <= result.score <= 1 and result.anomaly_map.shape == (40, 48)


@pytest.mark.parametrize("changes,message", [
    ({"teacher": ""}, "--teacher is required"),
    ({"channels": 3}, "come from its teacher"),
    ({"model_overrides": {"smoothing_sigma": 2.0}}, "come from its teacher"),
    ({"segmentation": "copy"}, "segmentation"),
    ({"epochs": None, "minutes": None}, "--epochs or --minutes"),
])
def test_distill_options_are_validated(teacher, data, tmp_path, changes, message):
    teacher = changes.pop("teacher", teacher)
    with pytest.raises(ConfigError, match=message):
        _opts(teacher, data, tmp_path, **changes).validate()

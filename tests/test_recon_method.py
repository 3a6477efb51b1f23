"""The reconstruction-error detector (issue 13 part 2, `--method recon`): the config, the DDIM
reconstruction against the schedule's formulas, the error maps against scikit-image, the
ONNX graph against torch through the Detector, training, and the paths that refuse it."""
import json
import re

import numpy as np
import onnx
import pytest
import torch
from skimage.metrics import structural_similarity

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import load_model, read_tensors, save_model
from dad_edge.cli import build_parser, main
from dad_edge.cli.train import train_options
from dad_edge.training.resume import resumed_options
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.imageio import read_image
from dad_edge.errors import ConfigError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.build import build_model
from dad_edge.model.config import ModelConfig, ReconConfig, preset
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.model.info import model_info
from dad_edge.model.recon_ad import ReconAD
from dad_edge.model.recon_error import gaussian_blur, ssim_taps, structural_error_map
from dad_edge.model.schedule import NoiseSchedule, ddim_timesteps
from dad_edge.runtime.fused import FusedPipeline
from dad_edge.training.distill import DistillOptions, distill
from dad_edge.training.train import Trainer, TrainOptions, train


def recon_cfg(backbone="unet", **recon):
    return preset("tiny", backbone=backbone, method="recon", recon=recon)


def perturbed(cfg, seed=0, std=0.1) -> ReconAD:
    """A recon model with every parameter perturbed: untrained, the zero-initialised output layer
    would make eps 0 and every reconstruction the same function of the noise."""
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))
    return model


def images(n=2, seed=0, size=32):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32))


# -- the reconstruction ----------------------------------------------------------------------

def test_one_ddim_step_is_the_one_step_x0_formula():
    model, x = perturbed(recon_cfg(t=250, steps=1)), images()
    sched = NoiseSchedule()
    noise = model.noise.numpy()
    x_t = sched.q_sample(x.numpy(), 250, noise)  # schedule (3) with the fixed noise
    with torch.no_grad():
        eps = model.unet(torch.from_numpy(x_t), torch.full((2,), 250.0)).numpy()
        got = model.reconstruct(x).numpy()
    want = np.clip(sched.predict_x0(x_t, 250, eps), -1, 1)  # schedule (4), clamped
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(got - x.numpy()).max() > 0.1  # a reconstruction, not the input


def test_k_ddim_steps_follow_the_deterministic_update():
    model, x = perturbed(recon_cfg(t=250, steps=3)), images(seed=1)
    assert ddim_timesteps(250, 3) == (250, 167, 83) and [s.t for s in model.steps] == [250, 167, 83]
    sched = NoiseSchedule()
    abar = sched.alphas_cumprod
    xt = torch.from_numpy(sched.q_sample(x.numpy(), 250, model.noise.numpy()))
    with torch.no_grad():
        for t, t_next in ((250, 167), (167, 83), (83, None)):
            eps = model.unet(xt, torch.full((2,), float(t)))
            x0 = ((xt - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])).clamp(-1, 1)
            if t_next is not None:  # DDIM, eta 0: the same eps carries x0 to the next timestep
                xt = np.sqrt(abar[t_next]) * x0 + np.sqrt(1 - abar[t_next]) * eps
        got, again = model.reconstruct(x), model.reconstruct(x)
        one_step = perturbed(recon_cfg(t=250, steps=1)).reconstruct(x)
    assert (got - x0).abs().max() <= 1e-5
    assert torch.equal(got, again)  # fixed noise: the same image, the same reconstruction
    assert (got - one_step).abs().max() > 1e-3  # the extra steps change it


def test_fixed_noise_is_saved_and_checkpoint_has_no_segmentation_net(tmp_path):
    cfg = recon_cfg(steps=2, error="ssim")
    model = perturbed(cfg, seed=2)
    assert torch.equal(model.noise, DiffusionAD(preset("tiny")).noise[:1])  # the seed's first noise image
    save_model(tmp_path / "m.safetensors", model, md.build_metadata(cfg))
    tensors, meta = read_tensors(tmp_path / "m.safetensors")
    assert set(tensors) == {"noise"} | {f"unet.{k}" for k in model.unet.state_dict()}
    assert not any("seg" in k for k in tensors) and "seg" not in meta["model"]
    back, _ = load_model(tmp_path / "m.safetensors")
    x = images(3, seed=4)
    with torch.no_grad():
        a, b = model(x), back(x)
    assert isinstance(back, ReconAD) and back.cfg == cfg
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)


# -- the error maps and the image score ---------------------------------------------------------

def test_squared_error_map_and_image_scores():
    x = images(2, seed=5)
    for rule in ("topk", "mean"):
        model = perturbed(recon_cfg(image_score=rule), seed=1)
        with torch.no_grad():
            out, x0 = model(x), model.reconstruct(x)
        want = ((x - x0) / 2).square().mean(dim=1, keepdim=True)
        assert torch.allclose(out.anomaly_map, want, atol=1e-7)
        flat = want.flatten(1)
        score = flat.topk(model.cfg.top_k, dim=1).values.mean(1) if rule == "topk" else flat.mean(1)
        assert torch.allclose(out.score, score, atol=1e-7)
        assert 0 <= float(out.anomaly_map.min()) and float(out.anomaly_map.max()) <= 1


def test_structural_map_is_scikit_image_ssim_inside_the_border():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (40, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    b[10:20, 10:20] = 1.0  # a structural change as well as noise
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, full=True)[1].mean(axis=2)  # (H, W)
    ta, tb = (torch.from_numpy(v).permute(2, 0, 1)[None] * 2 - 1 for v in (a, b))  # to [-1, 1]
    got = structural_error_map(ta, tb, ssim_taps())[0, 0].numpy()
    inner = slice(5, -5)  # scikit-image mirrors at the border, we replicate
    assert np.abs(got[inner, inner] - (1 - ref[inner, inner]) / 2).max() <= 1e-5
    assert got[12:18, 12:18].mean() > 2 * got[25:35, 25:35].mean()  # the square stands out
    assert float(structural_error_map(ta, ta, ssim_taps()).abs().max()) <= 1e-5  # identical -> 0
    # A half-precision model (Detector(half=True) on CUDA) still computes the map at float32.
    model = perturbed(recon_cfg(error="ssim"))
    half = model.error_map(ta.half(), tb.half())
    assert half.dtype == torch.float32 and (half - model.error_map(ta, tb)).abs().max() <= 2e-3


def test_smoothing_is_diffusionads():
    m = torch.rand(2, 1, 32, 32)
    model = perturbed(recon_cfg().replace(smoothing_sigma=1.5))
    assert torch.allclose(model.score(m).anomaly_map, DiffusionAD(preset("tiny", smoothing_sigma=1.5)).smooth(m),
                          atol=1e-7)
    assert torch.allclose(gaussian_blur(m, model.smoothing), model.score(m).anomaly_map)


# -- the config -------------------------------------------------------------------------------

def test_config_round_trips_and_old_configs_load_as_diffusionad():
    cfg = recon_cfg(backbone="dit", t=120, steps=4, error="ssim", image_score="mean")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["method"] == "recon" and d["recon"] == {"t": 120, "steps": 4, "error": "ssim", "image_score": "mean"}
    assert not {"seg", "t_small", "t_large", "guidance_w", "denoiser"} & set(d)  # DiffusionAD's alone
    assert ModelConfig.from_dict(d) == cfg and cfg.seg is None and cfg.recon == ReconConfig(120, 4, "ssim", "mean")
    meta = md.loads(md.dumps(md.build_metadata(cfg)), "test")
    assert md.model_config(meta) == cfg
    # A DiffusionAD config serialises as before the method existed, and such JSON loads as DiffusionAD.
    old = preset("compact").to_dict()
    assert "method" not in old and "recon" not in old
    back = ModelConfig.from_dict(old)
    assert back == preset("compact") and back.method == "diffusionad" and back.recon is None
    assert ModelConfig.from_dict(json.loads(json.dumps(preset("tiny").__dict__, default=vars))) == preset("tiny")


@pytest.mark.parametrize("recon, message", [
    ({"steps": 0}, r"recon\.steps=0"),
    ({"t": 0}, r"recon\.t=0"),
    ({"t": 1000}, r"recon\.t=1000 must be an integer in \[1, 999\]"),
    ({"t": 10, "steps": 11}, r"recon\.steps=11 .*recon\.t=10"),
    ({"error": "l1"}, r"recon\.error='l1'.*\('squared', 'ssim'\)"),
    ({"image_score": "max"}, r"recon\.image_score='max'"),
    ({"k": 2}, r"unknown recon config key\(s\) \['k'\]"),
])
def test_bad_recon_values_name_the_value(recon, message):
    with pytest.raises(ConfigError, match=message):
        recon_cfg(**recon)
    if "k" not in recon:
        with pytest.raises(ConfigError, match=message):  # the same through JSON, as every artifact
            ModelConfig.from_dict({**recon_cfg().to_dict(), "recon": {**ReconConfig().__dict__, **recon}})


def test_methods_keep_to_their_own_fields():
    with pytest.raises(ConfigError, match=r"method='vae'.*\('diffusionad', 'recon', 'seg'\)"):
        preset("tiny", method="vae")
    with pytest.raises(ConfigError, match=r"apply to method='recon'"):
        preset("tiny", recon={"t": 100})
    with pytest.raises(ConfigError, match=r"t_large=300 is a setting of method 'diffusionad'"):
        recon_cfg().replace(t_large=300)
    with pytest.raises(ConfigError, match=r"reads no `recon` section"):
        preset("tiny").replace(recon=ReconConfig())
    with pytest.raises(ConfigError, match=r"seg=.* is a setting of method 'diffusionad'"):
        recon_cfg().replace(seg=preset("tiny").seg)
    with pytest.raises(ConfigError, match=r"method is 'diffusionad'"):
        ReconAD(preset("tiny"))
    assert isinstance(build_model(preset("tiny")), DiffusionAD) and isinstance(build_model(recon_cfg()), ReconAD)


def test_info_counts_k_passes_and_no_segmentation_net():
    one, three, dad = (model_info(recon_cfg(steps=1)), model_info(recon_cfg(steps=3)),
                       model_info(preset("tiny")))
    assert one["params"] == one["params_unet"] == dad["params_unet"] and one["params_seg"] == 0
    assert three["unet_passes"] == 3 and three["gflops"] == pytest.approx(3 * one["gflops"], rel=0.01)
    assert one["gflops"] == pytest.approx(dad["gflops_unet"] / 2, rel=0.01)  # one pass against DiffusionAD's two


# -- export and the Detector ------------------------------------------------------------------

@pytest.mark.parametrize("backbone, recon", [
    ("unet", {"steps": 3}),
    ("dit", {"steps": 2, "error": "ssim", "image_score": "mean"}),
])
def test_onnx_graph_unrolls_the_steps_and_matches_torch_in_the_detector(backbone, recon, tmp_path):
    cfg = recon_cfg(backbone, **recon).replace(smoothing_sigma=1.0)
    ckpt = tmp_path / "model.safetensors"
    save_model(ckpt, perturbed(cfg, seed=7), md.build_metadata(cfg, thresholds=md.Thresholds(0.3, 0.4, "test")))
    export_onnx(ckpt, tmp_path / "model.onnx")
    proto = onnx.load(str(tmp_path / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert md.model_config(md.loads(props["dad_edge"], "test")) == cfg
    # K passes of the eps-predictor in one graph: its first layer (scope conv_in / patch_embed, then _1, _2 ...)
    # appears once per pass.
    first = "conv_in" if backbone == "unet" else "patch_embed"
    scopes = [n.name.split("/")[2] for n in proto.graph.node if n.op_type == "Conv" and n.name.count("/") >= 3]
    assert sum(re.fullmatch(rf"{first}(_\d+)?", sc) is not None for sc in scopes) == recon["steps"]
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    with dad_edge.Detector(ckpt, device="cpu") as a, dad_edge.Detector(tmp_path / "model.onnx") as b:
        by_torch, by_ort = a(frames), b(frames)
    assert max(float(np.abs(r.anomaly_map - s.anomaly_map).max()) for r, s in zip(by_torch, by_ort)) <= 1e-4
    assert max(abs(r.score - s.score) for r, s in zip(by_torch, by_ort)) <= 1e-4
    assert abs(by_torch[0].score - by_torch[1].score) > 1e-4  # distinct images, distinct scores


def test_fused_path_refuses_a_recon_model_and_the_automatic_choice_skips_it(tmp_path):
    cfg = recon_cfg()
    model = perturbed(cfg)
    with pytest.raises(ConfigError, match="method is 'recon'"):
        FusedPipeline(model)
    save_model(tmp_path / "m.safetensors", model, md.build_metadata(cfg))
    with pytest.raises(ConfigError, match="method is 'recon'"):
        dad_edge.Detector(tmp_path / "m.safetensors", device="cpu", fused=True)
    with dad_edge.Detector(tmp_path / "m.safetensors", device="cpu") as det:  # fused=None: the plain graph
        assert det(np.zeros((32, 32, 3), np.uint8)).ok


# -- training -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """tiny, --method recon, five epochs on the CPU (about 4 s). Two epochs at the recipe's rate leave the
    maps of an untrained model (6 optimizer steps); this is the least that shows learnt reconstruction."""
    return train(TrainOptions(data=str(data), out=str(tmp_path_factory.mktemp("run")), preset="tiny",
                              model_overrides={"method": "recon"}, epochs=5, batch_size=4, lr_unet=0.01,
                              device="cpu", progress=False))


def test_training_sees_good_images_only_and_trains_the_denoiser_alone(data, tmp_path):
    trainer = Trainer(TrainOptions(data=str(data), out=str(tmp_path), preset="tiny",
                                   model_overrides={"method": "recon"}, epochs=1, batch_size=4, device="cpu"))
    assert isinstance(trainer.model, ReconAD)
    assert all(bool(b.normal.all()) and not b.mask.any() for b in trainer.train.epoch(0))  # no synthetic anomalies
    (group,) = trainer.optimizer.param_groups
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in trainer.model.parameters())
    terms = trainer._loss(next(iter(trainer.val.epoch(0))), torch.Generator().manual_seed(0))
    assert float(terms.total.detach()) == float(terms.noise.detach()) > 0.5  # noise MSE of a zero-initialised eps-predictor: ~1


def test_a_recon_run_resumes_with_its_own_recipe(data, tmp_path):
    """--resume fills unset options from the run's recipe record, which also holds the fields only DiffusionAD
    uses (lr_seg, line_prob, ...); a recon run takes back only its own, not options it would refuse."""
    opts = dict(data=str(data), out=str(tmp_path), preset="tiny", model_overrides={"method": "recon"},
                batch_size=4, device="cpu", progress=False)
    train(TrainOptions(epochs=1, lr_unet=5e-4, **opts))
    resumed = resumed_options(TrainOptions(epochs=2, resume=True, **opts))
    assert resumed.lr_unet == 5e-4 and resumed.lr_seg is None and resumed.line_prob is None
    train(TrainOptions(epochs=2, resume=True, **opts))
    assert read_tensors(tmp_path / "train_state.safetensors")[1]["train_state"]["epoch"] == 2


def test_trained_model_loads_in_the_detector_and_flags_a_pasted_square(trained, data):
    tensors, meta = read_tensors(trained)
    assert not any(k.startswith("segnet") for k in tensors) and meta["model"]["method"] == "recon"
    assert meta["training"]["selection"].startswith("lowest noise loss on held-out good images")
    recipe = meta["training"]["recipe"]  # the DDPM's rate, none of the segmentation net's or anomalies'
    assert "lr_unet" in recipe and not {"lr_seg", "seg_stride", "line_prob", "recon_weight"} & set(recipe)
    thresholds = md.thresholds(meta)
    assert 0 <= thresholds.image <= 1 and 0 <= thresholds.pixel <= 1  # from held-out good images
    clean = read_image(sorted((data / "test" / "good").glob("*.png"))[0])
    pasted = clean.copy()
    pasted[10:20, 10:20] = 255
    square = np.zeros(clean.shape[:2], bool)
    square[10:20, 10:20] = True
    with dad_edge.Detector(trained, device="cpu") as det:
        r_clean, r_pasted = det([clean, pasted])
    # The denoiser reconstructs the brick texture, not the foreign square: the error there is several times
    # that of the same pixels of the clean image.
    assert r_pasted.anomaly_map[square].mean() > 3 * r_clean.anomaly_map[square].mean()
    assert r_pasted.score > r_clean.score + 0.1
    # Learnt, not the clamping of an untrained (eps = 0) model: it reconstructs the good image far better.
    with dad_edge.Detector.from_module(build_model(load_model(trained)[0].cfg), color_order="RGB") as untrained:
        assert r_clean.anomaly_map.mean() < 0.5 * untrained(clean).anomaly_map.mean()


def test_distillation_refuses_a_recon_teacher(trained, data, tmp_path):
    with pytest.raises(ConfigError, match="method='recon'"):
        distill(DistillOptions(teacher=str(trained), data=str(data), out=str(tmp_path), preset="tiny", epochs=1,
                               device="cpu", progress=False))


# -- the CLI ----------------------------------------------------------------------------------

def test_cli_method_flags(data, tmp_path, capsys):
    args = build_parser().parse_args(["train", "--data", str(data), "--out", str(tmp_path), "--preset", "tiny",
                                      "--method", "recon", "--recon-steps", "2", "--recon-error", "ssim",
                                      "--epochs", "1"])
    assert train_options(args).model_config(channels=1) == preset(
        "tiny", channels=1, method="recon", recon=ReconConfig(steps=2, error="ssim"))
    for flags, named in ((["--recon-t", "100"], "apply to method='recon'"),
                         (["--method", "recon", "--recon-steps", "0"], "recon.steps=0"),
                         (["--method", "recon", "--band-prob", "0.3"], "--band-prob 0.3 does not apply"),
                         (["--method", "recon", "--patch-prob", "0.5"], "--patch-prob 0.5 does not apply"),
                         (["--method", "recon", "--line-prob", "0.3"], "--line-prob 0.3 does not apply"),
                         (["--method", "recon", "--preview", "2"], "--preview shows synthetic anomalies")):
        code = main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--preset", "tiny", "--epochs",
                     "1", "--quiet", *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and named in err, (flags, err)

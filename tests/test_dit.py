"""The DiT eps-predictor (issue 13, part 1): the module itself, its config and presets, and the
whole pipeline with it (training, Detector, checkpoint, ONNX export, distillation, fused path)."""
import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import load_model, read_tensors, save_model
from dad_edge.cli import build_parser, main
from dad_edge.cli.train import train_options
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.errors import ConfigError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import PRESETS, DiTConfig, ModelConfig, preset
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.model.dit import DiT, sincos_position_embedding
from dad_edge.model.info import count_params, model_info
from dad_edge.model.unet import UNet
from dad_edge.runtime.fused import FusedPipeline
from dad_edge.training.distill import DistillOptions, distill
from dad_edge.training.train import TrainOptions, train
from deploy_support import random_model

TINY = preset("tiny-dit")


def _dit(seed=0, cfg=TINY.dit, size=32, channels=3, std=None):
    """A DiT with DiT's initialisation; with `std`, every parameter perturbed (so the output is not 0)."""
    torch.manual_seed(seed)
    net = DiT(cfg, size, channels)
    if std is not None:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(std * torch.randn(p.shape))
    return net.eval()


# -- the module -----------------------------------------------------------------------------

def test_output_is_eps_shaped_and_depends_on_t():
    net = _dit(std=0.1)
    x = torch.randn(1, 3, 32, 32).expand(2, 3, 32, 32)  # the same image twice
    with torch.no_grad():
        out = net(x, torch.tensor([10.0, 900.0]))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out[0] - out[1]).abs().max() > 1e-3  # only t differs
    with torch.no_grad():  # embed + forward_embedded is forward (the path DiffusionAD takes)
        assert torch.equal(net.forward_embedded(x, net.embed(torch.tensor([10.0, 900.0]))), out)


def test_adaln_zero_init_gives_zero_output_and_identity_blocks():
    net = _dit()
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([0.0, 250.0, 999.0])
    out = net(x, t)
    assert torch.count_nonzero(out) == 0  # exactly zero, as the U-Net's zero output conv makes its own
    h, c = torch.randn(3, 64, 32), net.embed(t)
    for block in net.blocks:
        assert torch.equal(block(h, c), h)  # every gate is 0
    # Zero-initialised is not dead: the output layer gets a gradient at once, and once it is not zero
    # (after the first step) so do the gates.
    (out - 1).square().sum().backward()
    assert net.final.linear.weight.grad.abs().sum() > 0
    with torch.no_grad():
        net.final.linear.weight -= net.final.linear.weight.grad
    net.zero_grad()
    (net(x, t) - 1).square().sum().backward()
    assert all(block.modulation[1].weight.grad.abs().sum() > 0 for block in net.blocks)


def test_each_output_patch_comes_from_its_own_input_patch():
    """Patchify and unpatchify agree: with the blocks still the identity there is no mixing of
    tokens, so a change inside one patch changes that patch of the output only."""
    net = _dit()
    with torch.no_grad():
        net.final.linear.weight.normal_()  # a non-zero read-out, blocks left as at init
        x = torch.randn(1, 3, 32, 32)
        y = x.clone()
        y[0, :, 9, 14] += 1.0  # in the patch of row 2, column 3 (patch side 4)
        diff = (net(y, torch.tensor([100.0])) - net(x, torch.tensor([100.0]))).abs().sum(dim=(0, 1))
    changed = diff > 0
    assert changed[8:12, 12:16].all()
    changed[8:12, 12:16] = False
    assert not changed.any()


def test_position_embedding_is_fixed_2d_and_not_saved():
    net = _dit(cfg=DiTConfig(patch_size=4, hidden=16, depth=1, heads=2))
    pos = sincos_position_embedding(16, 8).reshape(8, 8, 16)  # (row, column, width)
    assert torch.equal(net.pos_embed[0], pos.reshape(64, 16))
    assert "pos_embed" not in net.state_dict() and not any(p is net.pos_embed for p in net.parameters())
    # First half: the row; second half: the column.
    assert torch.equal(pos[3, 0, :8], pos[3, 7, :8]) and not torch.equal(pos[0, 0, :8], pos[1, 0, :8])
    assert torch.equal(pos[0, 5, 8:], pos[6, 5, 8:]) and not torch.equal(pos[0, 0, 8:], pos[0, 1, 8:])
    assert torch.equal(pos[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    assert len({tuple(v.tolist()) for v in pos.reshape(64, 16)}) == 64  # every position distinct
    # Computed for the configured size: the same weights serve another allowed image size.
    big = DiT(net.cfg, 64, 3)
    big.load_state_dict(net.state_dict())
    assert big.pos_embed.shape == (1, 256, 16) and big(torch.randn(1, 3, 64, 64), torch.tensor([5.0])).shape[-1] == 64


# -- config and presets ---------------------------------------------------------------------

def test_backbone_picks_the_presets_dit_variant_and_back():
    for name in ("paper", "compact", "tiny"):
        dit = preset(name, backbone="dit")
        assert dit == PRESETS[f"{name}-dit"] and dit.backbone == "dit" and dit.unet is None
        assert dit.seg == PRESETS[name].seg and dit.image_size == PRESETS[name].image_size
        assert preset(f"{name}-dit", backbone="unet") == PRESETS[name]
    cfg = preset("compact", backbone="dit", image_size=128)
    assert cfg.dit == PRESETS["compact-dit"].dit and cfg.top_k == 12  # other changes still apply


@pytest.mark.parametrize("make", [
    lambda: preset("tiny", backbone="vit"),
    lambda: ModelConfig.from_dict({**preset("tiny").to_dict(), "backbone": "vit"}),
    lambda: dataclasses.replace(TINY, backbone="vit").validate(),
])
def test_unknown_backbone_is_one_config_error_naming_it(make):
    with pytest.raises(ConfigError, match=r"backbone='vit'.*\('unet', 'dit'\)"):
        make()


@pytest.mark.parametrize("changes, message", [
    (dict(dit=DiTConfig(hidden=30, heads=2, patch_size=4)), "dit.hidden=30"),
    (dict(dit=DiTConfig(hidden=32, heads=3, patch_size=4)), "dit.heads=3"),
    (dict(dit=DiTConfig(hidden=32, heads=2, depth=0, patch_size=4)), "dit.depth=0"),
    (dict(dit=DiTConfig(hidden=32, heads=2, patch_size=3)), "dit.patch_size=3"),
    (dict(dit=DiTConfig(hidden=32, heads=2, mlp_ratio=0.0, patch_size=4)), "dit.mlp_ratio"),
    (dict(image_size=40, top_k=4, dit=DiTConfig(hidden=32, heads=2, patch_size=16)), r"image_size=40.*dit\.patch_size"),
    (dict(dit=None), "needs the `dit` config"),
    (dict(unet=PRESETS["tiny"].unet), "builds no unet"),
])
def test_bad_dit_configs_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **changes).validate()
    with pytest.raises(ConfigError, match=message):  # the same through JSON, as every artifact
        d = dataclasses.asdict(dataclasses.replace(TINY, **changes))
        ModelConfig.from_dict(d)


def test_u_net_configs_serialise_as_before_and_old_files_load_as_u_net():
    d = preset("compact").to_dict()
    assert "backbone" not in d and "dit" not in d  # same JSON (and config hashes) as before the DiT
    old = json.loads(json.dumps(d))
    cfg = ModelConfig.from_dict(old)
    assert cfg == preset("compact") and cfg.backbone == "unet" and cfg.dit is None
    with torch.device("meta"):
        assert isinstance(DiffusionAD(cfg).unet, UNet)
    # A DiT config carries its backbone and no U-Net section, and round-trips.
    dd = TINY.to_dict()
    assert dd["backbone"] == "dit" and "unet" not in dd
    assert ModelConfig.from_dict(json.loads(json.dumps(dd))) == TINY


def test_info_counts_the_dit_and_compact_dit_fits_the_budget():
    info = model_info(preset("compact-dit"))
    assert info["image_size"] == 256 and info["backbone"] == "dit"
    assert info["params"] <= 8e6 and info["gflops"] <= 20  # 2 DiT passes + segmentation at 256x256
    with torch.device("meta"):
        net = DiT(PRESETS["compact-dit"].dit, 256, 3)
    assert info["params_unet"] == count_params(net)
    assert info["gflops"] == pytest.approx(info["gflops_unet"] + info["gflops_seg"])
    # Tokens: 1024 at 256x256, 256 at 128x128; the linears scale with them, attention with their square.
    small = model_info(preset("compact-dit", image_size=128))
    assert 4 <= info["gflops_unet"] / small["gflops_unet"] <= 16
    # DiT-B/8: about as many parameters as the paper's U-Net.
    with torch.device("meta"):
        assert abs(count_params(DiT(PRESETS["paper-dit"].dit, 256, 3)) - 130.2e6) <= 0.01 * 130.2e6


def test_cli_info_names_the_dit():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["info", "--preset", "compact", "--backbone", "dit"]) == 0
    assert printed.getvalue().startswith("compact-dit: ") and "(DiT " in printed.getvalue()


# -- the pipeline with the DiT --------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """tiny with `--backbone dit`, two epochs on the CPU."""
    out = tmp_path_factory.mktemp("run")
    return train(TrainOptions(data=str(data), out=str(out), preset="tiny", model_overrides={"backbone": "dit"},
                              epochs=2, batch_size=4, device="cpu", progress=False))


def _test_images(data: Path):
    return sorted((data / "test").rglob("*.png"))


def test_training_writes_a_dit_model_the_detector_scores(trained, data):
    model, meta = load_model(trained)
    assert model.cfg.backbone == "dit" and isinstance(model.unet, DiT) and meta["model"]["backbone"] == "dit"
    kept = ("unet.", "segnet.", "noise", "recon_term.", "exposure_term.")  # networks, fixed noise, map and score terms
    assert all(k.startswith(kept) for k in read_tensors(trained)[0])
    x = torch.randn(2, model.cfg.channels, 32, 32)
    with torch.no_grad():
        assert model.unet(x, torch.tensor([200.0, 400.0])).abs().max() > 0  # trained off its zero start
    paths = _test_images(data)
    with dad_edge.Detector(trained, device="cpu") as det:
        results = det(paths)
    scores = np.array([r.score for r in results])
    assert all(r.ok for r in results) and results[0].anomaly_map.shape == (32, 32)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all() and scores.std() > 0
    # The score is the mean of the map's top-k values: inside the map's range.
    assert all(r.anomaly_map.min() - 1e-6 <= r.score <= r.anomaly_map.max() + 1e-6 for r in results)


def test_export_and_onnxruntime_match_torch(trained, data, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(trained, onnx_path)
    proto = onnx.load(str(onnx_path))
    assert {"LayerNormalization", "Softmax", "DepthToSpace"} <= {n.op_type for n in proto.graph.node}
    assert md.model_config(md.loads(dict((p.key, p.value) for p in proto.metadata_props)["dad_edge"], "t")).backbone == "dit"
    paths = _test_images(data)
    with dad_edge.Detector(trained, device="cpu") as a, dad_edge.Detector(onnx_path) as b:
        by_torch, by_ort = a(paths), b(paths)
    assert max(float(np.abs(r.anomaly_map - s.anomaly_map).max()) for r, s in zip(by_torch, by_ort)) <= 1e-4
    assert max(abs(r.score - s.score) for r, s in zip(by_torch, by_ort)) <= 1e-4


@pytest.mark.parametrize("opset", [17, 20])
def test_onnxruntime_matches_torch_on_a_random_dit(opset, tmp_path):
    """A perturbed model (an untrained DiT outputs exactly 0) with a dynamic batch, at the default
    opset and the highest allowed."""
    model = random_model(TINY, seed=3)
    export_onnx(model, tmp_path / "m.onnx", opset=opset)
    pixels = np.random.default_rng(opset).uniform(0, 255, (3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(pixels * SCALE + OFFSET))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    amap, score = sess.run(["anomaly_map", "score"], {"image": pixels})
    assert np.abs(amap - ref.anomaly_map.numpy()).max() <= 1e-4
    assert np.abs(score - ref.score.numpy()).max() <= 1e-4
    assert ref.score.std() > 0  # the images get distinct scores: the comparison means something


def test_checkpoint_round_trip_keeps_the_backbone(tmp_path):
    cfg = preset("tiny-dit", channels=1, noise_seed=5)
    model = random_model(cfg, seed=4)
    save_model(tmp_path / "m.safetensors", model, md.build_metadata(cfg))
    back, meta = load_model(tmp_path / "m.safetensors")
    assert back.cfg == cfg and isinstance(back.unet, DiT)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(back(x).anomaly_map, model(x).anomaly_map)


@pytest.mark.parametrize("denoiser", ["two_pass", "single_pass"])
def test_fused_path_runs_the_dit_model(denoiser):
    model = random_model(preset("tiny-dit", denoiser=denoiser, smoothing_sigma=1.0), seed=1)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.float32))
    with torch.inference_mode():
        plain = model(pixels * SCALE + OFFSET)
    fused = FusedPipeline(model, impl="reference").from_pixels(pixels)
    assert (fused.anomaly_map - plain.anomaly_map).abs().max() <= 1e-6
    assert (fused.score - plain.score).abs().max() <= 1e-6


def test_distilled_single_pass_dit_student_of_the_dit_teacher(trained, data, tmp_path):
    path = distill(DistillOptions(teacher=str(trained), data=str(data), out=str(tmp_path), preset="tiny-dit",
                                  single_pass=True, epochs=1, batch_size=4, device="cpu", progress=False))
    model, _ = load_model(path)
    assert isinstance(model.unet, DiT) and model.cfg.denoiser == "single_pass"
    with dad_edge.Detector(path, device="cpu") as det:
        assert det(_test_images(data)[0]).ok


def test_cli_backbone_flag(data, tmp_path, capsys):
    args = build_parser().parse_args(["train", "--data", str(data), "--out", str(tmp_path), "--preset", "tiny",
                                      "--backbone", "dit", "--epochs", "1"])
    assert train_options(args).model_config(channels=1) == preset("tiny-dit", channels=1)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--preset", "tiny",
                 "--backbone", "vit", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "backbone='vit'" in err

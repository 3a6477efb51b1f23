"""The method of a run that names none (training/recipe.py default_method): the segmentation net alone for
compact / tiny on a CPU, DiffusionAD on CUDA, for the paper and DiT presets and whenever a denoiser option is
set; what a run records and prints, and a resumed run keeping the method it was started with."""
import contextlib
import io

import pytest

import dad_edge
from dad_edge.artifacts.checkpoint import read_metadata, read_tensors
from dad_edge.artifacts.metadata import model_config
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.errors import ConfigError
from dad_edge.training.recipe import FULL_RES_FRACTION, default_method
from dad_edge.training.resume import resumed_options
from dad_edge.training.train import TrainOptions, Trainer, train
from training_support import DIFFUSIONAD


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=10, n_test_good=2,
                              n_test_per_defect=2)


@pytest.mark.parametrize("preset_name, device_type, asked, method", [
    ("compact", "cpu", False, "seg"),
    ("tiny", "cpu", False, "seg"),
    ("compact", "cuda", False, "diffusionad"),  # not measured against seg on a GPU budget
    ("paper", "cpu", False, "diffusionad"),  # a reproduction of the paper
    ("compact-dit", "cpu", False, "diffusionad"),  # a denoiser is what a DiT preset is
    ("compact", "cpu", True, "diffusionad"),  # the run set an option only the denoiser takes
])
def test_default_method_by_preset_device_and_options(preset_name, device_type, asked, method):
    assert default_method(preset_name, device_type, asked) == method


def test_options_name_the_method_the_user_set_or_the_default():
    base = dict(data="d", out="o", epochs=1)
    assert TrainOptions(**base).method("cpu") == "seg"
    assert TrainOptions(**base).method("cuda") == "diffusionad"
    assert TrainOptions(**base, preset="paper").method("cpu") == "diffusionad"
    for denoiser_option in (dict(lr_unet=1e-3), dict(large_target="noise"), dict(recon_weight=0.0),
                            dict(model_overrides={"backbone": "unet"})):
        assert TrainOptions(**base, **denoiser_option).method("cpu") == "diffusionad", denoiser_option
    for given in ("diffusionad", "recon", "seg"):  # --method wins, on either device
        opts = TrainOptions(**base, model_overrides={"method": given})
        assert opts.method("cpu") == opts.method("cuda") == given
    named = TrainOptions(**base).with_method("cpu")
    assert named.model_overrides == {"method": "seg"} and TrainOptions(**base).model_overrides == {}
    # The recipe follows the method: the seg default switches to full resolution for the last third.
    assert TrainOptions(**base).recipe("cpu", 32, 10).full_res_fraction == FULL_RES_FRACTION
    assert TrainOptions(**base, lr_unet=1e-3).recipe("cpu", 32, 10).full_res_fraction == 0.0


def test_an_explicit_seg_run_still_refuses_a_denoiser_option():
    with pytest.raises(ConfigError, match="does not apply to --method seg"):
        TrainOptions(data="d", out="o", epochs=1, lr_unet=1e-3, model_overrides={"method": "seg"}).validate()


def test_cli_train_without_method_trains_seg_on_the_cpu_and_says_so(data, tmp_path):
    out = tmp_path / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--epochs", "1",
                     "--batch", "4", "--device", "cpu"])
    assert code == 0
    assert "method seg: the segmentation net alone, the default for tiny on a CPU" in printed.getvalue()
    tensors, meta = read_tensors(out / "model.safetensors")
    assert meta["model"]["method"] == "seg" and not any(k.startswith("unet.") for k in tensors)
    assert meta["training"]["options"]["model_overrides"] == {"method": "seg"}  # the choice, recorded
    recipe = meta["training"]["recipe"]
    assert recipe["full_res_fraction"] == FULL_RES_FRACTION and "lr_unet" not in recipe
    # A denoiser option without --method: DiffusionAD, not a refusal.
    out2 = tmp_path / "denoiser"
    assert main(["train", "--data", str(data), "--out", str(out2), "--preset", "tiny", "--epochs", "1",
                 "--batch", "4", "--device", "cpu", "--lr-unet", "2e-3", "--quiet"]) == 0
    assert model_config(read_metadata(out2 / "model.safetensors")).method == "diffusionad"


def test_a_resumed_run_keeps_its_method_whatever_todays_default(data, tmp_path):
    """A DiffusionAD run (started with --method, or before seg became the CPU default) resumed without
    --method goes on as DiffusionAD; taking today's default would be refused as another model."""
    common = dict(data=str(data), out=str(tmp_path), preset="tiny", batch_size=4, device="cpu", progress=False)
    train(TrainOptions(epochs=1, model_overrides=dict(DIFFUSIONAD), **common))
    unnamed = TrainOptions(epochs=2, resume=True, **common)
    assert unnamed.method("cpu") == "seg"  # today's default
    assert resumed_options(unnamed).model_overrides["method"] == "diffusionad"
    trainer = Trainer(TrainOptions(epochs=2, resume=True, **common))
    assert trainer.cfg.method == "diffusionad"
    trainer.run()
    _, meta = read_tensors(tmp_path / "train_state.safetensors")
    assert meta["train_state"]["epoch"] == 2 and model_config(meta).method == "diffusionad"


def test_the_python_api_takes_the_method_as_a_keyword(data, tmp_path):
    common = dict(preset="tiny", epochs=1, batch_size=4, device="cpu", progress=False)
    named = dad_edge.train(data, tmp_path / "dad", method="diffusionad", **common)
    assert model_config(read_metadata(named)).method == "diffusionad"
    unnamed = dad_edge.train(data, tmp_path / "default", **common)
    assert model_config(read_metadata(unnamed)).method == "seg"
    with pytest.raises(ConfigError, match="not a detection method"):
        dad_edge.train(data, tmp_path / "bad", method="magic", **common)

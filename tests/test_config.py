import dataclasses
import json

import pytest

from dad_edge.model.config import PRESETS, ModelConfig, SegConfig, UNetConfig, preset, scaled_top_k
from dad_edge.errors import ConfigError
from dad_edge.model.info import model_info


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    cfg = preset(name)
    assert cfg.validate() is cfg
    assert cfg == PRESETS[name]


def test_paper_preset_matches_published_sizes():
    info = model_info(preset("paper"))
    # DiffusionAD: about 131.7 M (U-Net) + 28.4 M (segmentation) parameters.
    assert abs(info["params_unet"] - 131.7e6) <= 0.01 * 131.7e6, info["params_unet"]
    assert abs(info["params_seg"] - 28.4e6) <= 0.01 * 28.4e6, info["params_seg"]
    assert info["params"] == info["params_unet"] + info["params_seg"]
    assert info["image_size"] == 256
    # Two U-Net passes dominate: about 1.2 TFLOPs per 256x256 image.
    assert 1000 < info["gflops"] < 1500
    assert info["gflops"] == pytest.approx(info["gflops_unet"] + info["gflops_seg"])


def test_compact_preset_fits_the_edge_budget():
    cfg = preset("compact")
    assert cfg.image_size == 256
    info = model_info(cfg)
    assert info["params"] <= 8e6
    assert info["gflops"] <= 20
    assert info["gflops_unet"] > 0 and info["gflops_seg"] > 0


def test_flops_scale_with_image_area():
    small = model_info(preset("tiny"))
    large = model_info(preset("tiny", image_size=64))
    assert large["params"] == small["params"]  # same networks
    # Convolutions scale with the area (4x); the middle self-attention with its square.
    assert 4 * small["gflops"] * 0.99 <= large["gflops"] <= 16 * small["gflops"]


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="'nonesuch'") as e:
        preset("nonesuch")
    assert "compact" in str(e.value)  # lists the choices


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_from_dict_round_trips_through_json(name):
    cfg = preset(name)
    text = json.dumps(cfg.to_dict())
    back = ModelConfig.from_dict(json.loads(text))
    assert back == cfg
    assert isinstance(back.seg, SegConfig) and isinstance(back.seg.widths, tuple)
    if cfg.backbone == "unet":
        assert isinstance(back.unet, UNetConfig) and isinstance(back.unet.channel_mult, tuple)
    else:
        assert back.unet is None and back.dit == cfg.dit  # the DiT presets: tests/test_dit.py
    assert hash(back) == hash(cfg)  # tuples, not lists: still hashable/frozen


def test_from_dict_with_overrides_round_trips():
    cfg = preset("tiny").replace(noise_seed=7, smoothing_sigma=1.5, channels=1, guidance_w=0.5)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("where, key", [(None, "bogus"), ("unet", "bogus_unet"), ("seg", "bogus_seg")])
def test_unknown_keys_are_rejected(where, key):
    d = preset("tiny").to_dict()
    (d if where is None else d[where])[key] = 1
    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_dict(d)


def test_from_dict_rejects_non_object():
    with pytest.raises(ConfigError):
        ModelConfig.from_dict([1, 2])


def test_missing_keys_take_defaults():
    assert ModelConfig.from_dict({}) == ModelConfig()


def _unet(**kw):
    return dataclasses.replace(preset("tiny").unet, **kw)


@pytest.mark.parametrize("changes, field", [
    (dict(top_k=0), "top_k"),
    (dict(top_k=32 * 32 + 1), "top_k"),
    (dict(t_small=400, t_large=400), "t_small"),
    (dict(t_small=500, t_large=400), "t_small"),
    (dict(t_large=1000), "t_large"),
    (dict(image_size=34), "image_size"),  # not divisible by the seg net's 2**2
    (dict(image_size=16), "image_size"),  # too small
    (dict(channels=2), "channels"),
    (dict(beta_start=0.03), "beta_start"),
    (dict(guidance_w=-1.0), "guidance_w"),
    (dict(smoothing_sigma=-0.5), "smoothing_sigma"),
    (dict(noise_seed=-1), "noise_seed"),
    (dict(num_timesteps=1), "num_timesteps"),
    (dict(unet=_unet(groups=3)), "groups"),  # does not divide the width 8
    (dict(unet=_unet(num_heads=3)), "num_heads"),
    (dict(unet=_unet(patch_size=3)), "patch_size"),
    (dict(unet=_unet(dropout=1.0)), "dropout"),
    (dict(unet=_unet(num_res_blocks=0)), "num_res_blocks"),
    (dict(seg=SegConfig(widths=(8,))), "seg.widths"),
])
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        preset("tiny").replace(**changes)
    # The same through JSON, the path every artifact takes.
    d = dataclasses.replace(preset("tiny"), **changes).to_dict()
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ModelConfig.from_dict(d)


def test_image_size_not_divisible_by_patched_unet():
    # compact: patch 4 * 2**3 = 32 must divide the image size.
    with pytest.raises(ConfigError, match="image_size=48"):
        preset("compact", image_size=48)
    assert preset("compact", image_size=128).image_size == 128


def test_wrong_type_from_json_is_config_error():
    d = preset("tiny").to_dict()
    d["unet"]["channel_mult"] = None
    with pytest.raises(ConfigError):
        ModelConfig.from_dict(d)


def test_preset_scales_top_k_with_area():
    paper = preset("paper")
    assert paper.top_k == 50
    assert preset("paper", image_size=128).top_k == round(50 / 4) == 12  # 12.5 -> banker's 12
    assert preset("paper", image_size=512).top_k == 200
    assert preset("compact", image_size=128).top_k == round(50 * (128 / 256) ** 2)
    assert preset("tiny", image_size=64).top_k == 16
    assert preset("paper", image_size=32).top_k == 1  # never below 1
    # An explicit top_k wins over the scaling.
    assert preset("paper", image_size=128, top_k=7).top_k == 7
    # Other fields are not touched by the scaling.
    assert preset("paper", image_size=128).unet == paper.unet
    assert scaled_top_k(50, 256, 256) == 50


def test_preset_changes_are_validated_and_presets_not_mutated():
    with pytest.raises(ConfigError, match="top_k"):
        preset("tiny", top_k=0)
    before = PRESETS["tiny"]
    preset("tiny", noise_seed=3)
    assert PRESETS["tiny"] is before and before.noise_seed == 0


def test_old_config_with_resblock_updown_still_loads():
    """Model files of 0.1.0 store unet.resblock_updown (never read, now removed): they must load."""
    old = preset("compact").to_dict()
    old["unet"]["resblock_updown"] = True
    assert "resblock_updown" not in preset("compact").to_dict()["unet"]
    assert ModelConfig.from_dict(old) == preset("compact")
    old["unet"]["not_a_field"] = 1
    with pytest.raises(ConfigError, match="not_a_field"):
        ModelConfig.from_dict(old)

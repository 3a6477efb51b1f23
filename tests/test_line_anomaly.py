"""Thin synthetic anomalies (data/line_anomaly.py) and their place in the synthesizer and the CLI."""
import numpy as np
import pytest

from dad_edge.cli import build_parser
from dad_edge.cli.train import train_options
from dad_edge.data.line_anomaly import BRIGHTEN_RANGE, DARKEN_RANGE, LABEL_ALPHA, line_anomaly, line_stroke
from dad_edge.data.synthetic import AnomalySynthesizer
from dad_edge.artifacts.checkpoint import read_tensors, save_tensors
from dad_edge.data.demo import build_demo_dataset
from dad_edge.errors import ConfigError
from dad_edge.training.recipe import LINE_PROB, default_recipe, resolve_recipe
from dad_edge.training.resume import resumed_options
from dad_edge.training.train import Trainer, TrainOptions

S = 128


def _surface(seed=0, channels=1):
    rng = np.random.default_rng(seed)
    streaks = rng.normal(0, 10, (1, S)) + rng.normal(0, 5, (S, S))
    return np.repeat(np.clip(120 + streaks, 0, 255).astype(np.float32)[:, :, None], channels, axis=2)


def _thickness(mask):
    """Label pixels per pixel of length: area over the longer side of its bounding box (a line: about its width)."""
    ys, xs = np.nonzero(mask)
    return mask.sum() / max(np.ptp(ys) + 1, np.ptp(xs) + 1)


def test_a_line_is_thin_long_and_changes_only_where_it_is_drawn():
    drawn = 0
    for seed in range(20):
        img = _surface(seed)
        out = line_anomaly(img, np.random.default_rng(seed))
        if out is None:
            continue
        drawn += 1
        aug, mask = out
        assert aug.shape == img.shape and aug.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
        stroke = line_stroke(S, np.random.default_rng(seed))  # the same first draws: the same stroke
        np.testing.assert_array_equal(mask, (stroke >= LABEL_ALPHA).astype(np.float32))
        # Untouched where the stroke does not reach; changed under the label, by at least a few grey levels.
        np.testing.assert_array_equal(aug[stroke == 0], img[stroke == 0])
        change = np.abs(aug - img)
        assert change[mask == 1].mean() > 5
        # Outside the label only the anti-aliased rim, changed by under LABEL_ALPHA of what a line can change.
        assert change[mask == 0].max() < LABEL_ALPHA * max(DARKEN_RANGE[1] * 255, BRIGHTEN_RANGE[1])
        # A crack, not a blob: a few pixels thick and at least a tenth of the side long.
        ys, xs = np.nonzero(mask)
        assert max(np.ptp(ys), np.ptp(xs)) + 1 >= 0.08 * S
        assert _thickness(mask) < 4.0, _thickness(mask)
    assert drawn >= 18
    np.testing.assert_array_equal(line_anomaly(_surface(), np.random.default_rng(3))[0],
                                  line_anomaly(_surface(), np.random.default_rng(3))[0])


def test_lines_are_mostly_dark_and_scale_with_the_image():
    darker = sum(np.sum(a - _surface(s))[()] < 0 for s in range(40)
                 for a, _ in [line_anomaly(_surface(s), np.random.default_rng(s)) or (_surface(s), None)])
    assert 24 <= darker <= 39  # cracks (dark) are the usual case, scratches (bright) happen too
    small = np.mean([line_stroke(64, np.random.default_rng(s)).sum() for s in range(30)])
    large = np.mean([line_stroke(256, np.random.default_rng(s)).sum() for s in range(30)])
    assert 10 < large / small < 22  # length and width both scale: about 16x the covered area at 4x the side


def test_a_line_stays_on_the_foreground():
    fg = np.zeros((S, S), bool)
    fg[:, : S // 2] = True
    for seed in range(10):
        out = line_anomaly(_surface(seed), np.random.default_rng(seed), fg)
        if out is not None:
            aug, mask = out
            assert not mask[:, S // 2:].any()
            np.testing.assert_array_equal(aug[:, S // 2:], _surface(seed)[:, S // 2:])
    nothing = np.zeros((S, S), bool)
    assert line_anomaly(_surface(), np.random.default_rng(0), nothing) is None


def test_synthesizer_draws_lines_at_line_prob_and_nothing_extra_when_off():
    img = _surface(channels=3)
    synth = AnomalySynthesizer(S, 3, anomaly_prob=1.0, line_prob=1.0)
    for seed in range(6):
        aug, mask, anomalous = synth(img, np.random.default_rng(seed))
        assert anomalous and mask.any() and _thickness(mask) < 4.0
        # Outside the label only the stroke's faint anti-aliased rim may differ: nearly all of it is the image.
        assert np.all(aug[mask == 0] == img[mask == 0], axis=1).mean() > 0.97
        assert np.allclose(aug[..., 0], aug[..., 1])  # a grey line on a grey image: every channel alike
    # A Perlin blob is much thicker than a line: the option changes what is drawn.
    blob = AnomalySynthesizer(S, 3, anomaly_prob=1.0)(img, np.random.default_rng(1))[1]
    assert _thickness(blob) > 4.0
    # line_prob 0 draws nothing extra: the same samples as a synthesizer without the option.
    for seed in range(3):
        a = AnomalySynthesizer(S, 3, anomaly_prob=1.0)(img, np.random.default_rng(seed))
        b = AnomalySynthesizer(S, 3, anomaly_prob=1.0, line_prob=0.0)(img, np.random.default_rng(seed))
        np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ConfigError, match="line_prob"):
        AnomalySynthesizer(S, 3, line_prob=1.5)


def test_the_cpu_recipe_draws_lines_and_the_option_overrides_it(tmp_path):
    assert default_recipe("compact", 256, "cpu").line_prob == LINE_PROB == 0.3
    assert default_recipe("tiny", 32, "cpu").line_prob == LINE_PROB
    assert default_recipe("compact", 256, "cuda").line_prob == 0.0  # not measured there
    assert default_recipe("paper", 256, "cpu").line_prob == 0.0  # the paper's anomalies only
    assert resolve_recipe("compact", 256, "cpu", line_prob=0.0).line_prob == 0.0
    with pytest.raises(ConfigError, match="line_prob=1.5"):
        resolve_recipe("compact", 256, "cpu", line_prob=1.5)
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "1"]
    assert train_options(build_parser().parse_args(argv + ["--line-prob", "0.5"])).recipe("cpu").line_prob == 0.5
    assert train_options(build_parser().parse_args(argv)).line_prob is None  # unset: the recipe decides
    assert train_options(build_parser().parse_args(argv)).recipe("cpu").line_prob == LINE_PROB


def test_a_run_draws_the_recipes_lines_and_a_resumed_old_run_keeps_drawing_none(tmp_path):
    data = build_demo_dataset(tmp_path / "data", size=32, n_train=8, n_test_good=2, n_test_per_defect=1)
    opts = dict(data=str(data), preset="tiny", batch_size=4, progress=False, device="cpu")
    trainer = Trainer(TrainOptions(out=str(tmp_path / "run"), epochs=1, **opts))
    assert trainer.synth.line_prob == LINE_PROB == trainer.recipe.to_dict()["line_prob"]
    trainer.run()
    # A state written before line anomalies joined the recipe has no line_prob: that run drew none.
    state = tmp_path / "run" / "train_state.safetensors"
    tensors, meta = read_tensors(state)
    del meta["training"]["recipe"]["line_prob"]
    save_tensors(state, tensors, meta)
    assert resumed_options(TrainOptions(out=str(tmp_path / "run"), epochs=2, resume=True, **opts)).line_prob == 0.0
    given = TrainOptions(out=str(tmp_path / "run"), epochs=2, resume=True, line_prob=0.2, **opts)
    assert resumed_options(given).line_prob == 0.2  # an option given on --resume still wins

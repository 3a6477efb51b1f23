"""Thin synthetic anomalies (data/line_anomaly.py) and their place in the synthesizer and the CLI."""
import numpy as np
import pytest

from dad_edge.cli import build_parser
from dad_edge.cli.train import train_options
from dad_edge.data.line_anomaly import LABEL_ALPHA, line_anomaly, line_stroke
from dad_edge.data.synthetic import AnomalySynthesizer
from dad_edge.errors import ConfigError

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
        assert np.abs(aug - img)[mask == 1].mean() > 5
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


def test_train_cli_passes_line_prob(tmp_path):
    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "1",
                                      "--line-prob", "0.3"])
    assert train_options(args).line_prob == 0.3
    default = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "1"])
    assert train_options(default).line_prob == 0.0

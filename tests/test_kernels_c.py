"""The C extension dad_edge._C (kernels/csrc/dad_edge_C.c) against the references.

Odd sizes, gray/BGR/RGB/BGRA, batches > 1 of mixed frame sizes, single- and two-pass,
in-place outputs, ties and negative values for the top-k. The C code follows the
references' float32 operation order, so differences are at most float rounding.
"""
import numpy as np
import pytest

from dad_edge.kernels import c_ext
from dad_edge.kernels.combine_ref import combine_ref
from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref, preprocess_ref
from dad_edge.kernels.score_ref import score_ref
from dad_edge.data.preprocess import OFFSET, SCALE

from kernel_cases import COEFS, PREPROCESS_CASES, SCORE_CASES, combine_inputs, frames, maps, noise

pytestmark = pytest.mark.skipif(c_ext.C_ERROR is not None, reason=str(c_ext.C_ERROR))
ATOL = 1e-6


@pytest.mark.parametrize("shapes,channels,order,size", PREPROCESS_CASES)
def test_preprocess_noise(shapes, channels, order, size):
    fr, nz = frames(shapes), noise(channels, size)
    unet, x = c_ext.preprocess_noise_c(fr, size, channels, order, nz, COEFS, SCALE, OFFSET)
    unet_ref, x_ref = preprocess_noise_ref(fr, size, channels, order, nz, COEFS)
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(unet, unet_ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("shapes,channels,order,size", PREPROCESS_CASES[:3])
def test_preprocess_pixels_and_single_pass(shapes, channels, order, size):
    fr, nz = frames(shapes), noise(channels, size)
    _, pixels = c_ext.preprocess_noise_c(fr, size, channels, order, None, None, 1.0, 0.0)
    np.testing.assert_allclose(pixels, preprocess_ref(fr, size, channels, order, normalize=False), rtol=0, atol=1e-4)
    unet, _ = c_ext.preprocess_noise_c(fr, size, channels, order, nz, COEFS, SCALE, OFFSET, two_pass=False)
    unet_ref, _ = preprocess_noise_ref(fr, size, channels, order, nz, COEFS, two_pass=False)
    assert unet.shape == (len(fr), channels, size, size)
    np.testing.assert_allclose(unet, unet_ref, rtol=0, atol=ATOL)


def test_stacked_frames_and_x_into_the_segmentation_input():
    fr = np.stack(frames([(40, 30, 3)] * 4))  # one (B, H, W, C) array
    nz = noise(3, 16)
    seg = np.full((4, 6, 16, 16), np.nan, np.float32)
    unet, x = c_ext.preprocess_noise_c(fr, 16, 3, "BGR", nz, COEFS, SCALE, OFFSET, x_out=seg[:, :3])
    unet_ref, x_ref = preprocess_noise_ref(list(fr), 16, 3, "BGR", nz, COEFS)
    np.testing.assert_allclose(seg[:, :3], x_ref, rtol=0, atol=ATOL)
    assert np.isnan(seg[:, 3:]).all()  # the other half untouched
    np.testing.assert_allclose(unet, unet_ref, rtol=0, atol=ATOL)


def test_combine():
    x, eps, nz = combine_inputs()
    ref = combine_ref(x, eps, nz, COEFS, 1.0)
    np.testing.assert_allclose(c_ext.combine_c(x, eps, nz, COEFS, 1.0), ref, rtol=0, atol=ATOL)
    x1, eps1, nz1 = combine_inputs(b=1, c=1, s=9, seed=5)
    np.testing.assert_allclose(c_ext.combine_c(x1, eps1, nz1, COEFS, 0.5), combine_ref(x1, eps1, nz1, COEFS, 0.5),
                               rtol=0, atol=ATOL)


def test_combine_in_place_x_is_not_copied():
    x, eps, nz = combine_inputs()
    seg = np.zeros((3, 6, 17, 17), np.float32)
    seg[:, :3] = x
    out = c_ext.combine_c(seg[:, :3], eps, nz, COEFS, 1.0, out=seg)
    assert out is seg
    np.testing.assert_allclose(seg, combine_ref(x, eps, nz, COEFS, 1.0), rtol=0, atol=ATOL)


@pytest.mark.parametrize("k,sigma,image_t,pixel_t", SCORE_CASES)
def test_score(k, sigma, image_t, pixel_t):
    m = maps()
    got, ref = c_ext.score_c(m, k, sigma, image_t, pixel_t), score_ref(m, k, sigma, image_t, pixel_t)
    np.testing.assert_allclose(got.maps, ref.maps, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got.normalized, ref.normalized, rtol=0, atol=ATOL)
    if pixel_t is None:
        assert got.masks is None
    else:
        assert got.masks.dtype == bool and got.masks.shape == m.shape
        far = np.abs(ref.maps - pixel_t) > 1e-6  # blur rounding may flip pixels at the threshold
        np.testing.assert_array_equal(got.masks[far], ref.masks[far])


def test_score_negative_values_ties_and_3d_maps():
    m = np.full((2, 8, 8), -0.25, np.float32)
    m[1] = np.random.default_rng(4).standard_normal((8, 8)).astype(np.float32)
    m[1, 0, :5] = 3.0
    for k in (1, 5, 6, 64):
        np.testing.assert_allclose(c_ext.score_c(m, k).scores, score_ref(m, k).scores, rtol=0, atol=ATOL)


def test_bad_inputs_are_refused():
    fr, nz = frames([(10, 10, 3)]), noise(3, 8)
    with pytest.raises(ValueError, match="color_order"):
        c_ext.preprocess_noise_c(fr, 8, 3, "BRG", nz, COEFS, SCALE, OFFSET)
    with pytest.raises(ValueError, match="noise"):
        c_ext.preprocess_noise_c(fr, 8, 3, "BGR", noise(3, 9), COEFS, SCALE, OFFSET)
    with pytest.raises(ValueError):
        c_ext.preprocess_noise_c([np.zeros((4, 4, 3), np.float32)], 8, 3, "BGR", nz, COEFS, SCALE, OFFSET)
    x, eps, nzc = combine_inputs()
    with pytest.raises(ValueError, match="eps"):
        c_ext.combine_c(x, eps[:3], nzc, COEFS, 1.0)
    with pytest.raises(TypeError, match="float32"):
        c_ext.combine_c(x.astype(np.float64), eps, nzc, COEFS, 1.0)
    with pytest.raises(ValueError, match="top_k"):
        c_ext.score_c(maps(), 0)


def test_thread_pool_gives_the_single_thread_answers():
    """Inputs large enough to be cut into several chunks (samples straddling chunk edges),
    run on 1 and on 4 threads, and from several Python threads at once: identical results."""
    from concurrent.futures import ThreadPoolExecutor

    fr, nz = frames([(90, 70, 3)] * 5), noise(3, 128)
    x, eps, nzc = combine_inputs(b=9, c=3, s=50)  # 7500 per sample: chunks of 32768 cross samples
    m = maps(b=8, h=64, w=64)

    def run_all():
        unet, xo = c_ext.preprocess_noise_c(fr, 128, 3, "BGR", nz, COEFS, SCALE, OFFSET)
        s = c_ext.score_c(m, 9, 1.5, 0.5, 0.5)
        return [unet, xo, c_ext.combine_c(x, eps, nzc, COEFS, 1.0), s.scores, s.maps, s.masks]

    default = c_ext.num_threads()
    try:
        c_ext.set_num_threads(1)
        single = run_all()
        c_ext.set_num_threads(4)
        assert c_ext.num_threads() == 4
        with ThreadPoolExecutor(3) as ex:
            for result in [run_all()] + list(ex.map(lambda _: run_all(), range(3))):
                for a, b in zip(result, single):
                    np.testing.assert_array_equal(a, b)
    finally:
        c_ext.set_num_threads(0)
    assert c_ext.num_threads() == default
    np.testing.assert_allclose(single[2], combine_ref(x, eps, nzc, COEFS, 1.0), rtol=0, atol=ATOL)
    np.testing.assert_allclose(single[4], score_ref(m, 9, 1.5).maps, rtol=0, atol=ATOL)

"""The Triton kernels against the references, under the Triton interpreter on this CPU.

TRITON_INTERPRET=1 is set before any kernel module is imported unless a CUDA GPU is
present (then the kernels run on it; set TRITON_INTERPRET=1 yourself to interpret there).
The interpreter costs about 2 ms per program instance: inputs are small, blocks large.
The last test compiles every kernel ahead of time for sm_87 and sm_90 (no GPU needed).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from dad_edge.kernels.combine_ref import combine_ref  # noqa: E402
from dad_edge.kernels.combine_triton import combine_triton  # noqa: E402
from dad_edge.kernels.groupnorm_silu_ref import groupnorm_silu_ref  # noqa: E402
from dad_edge.kernels.groupnorm_silu_triton import groupnorm_silu_triton  # noqa: E402
from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref, preprocess_ref  # noqa: E402
from dad_edge.kernels.preprocess_noise_triton import preprocess_noise_triton  # noqa: E402
from dad_edge.kernels.score_ref import score_ref  # noqa: E402
from dad_edge.kernels.score_triton import score_triton  # noqa: E402
from dad_edge.data.preprocess import OFFSET, SCALE  # noqa: E402

from kernel_cases import COEFS, PREPROCESS_CASES, SCORE_CASES, combine_inputs, frames, maps, noise  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
ATOL = 1e-6  # GPU code may contract to FMA: a few float32 ulps of values of order 1


def dev(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(DEVICE)


def host(t):
    return t.cpu().numpy()


@pytest.mark.parametrize("shapes,channels,order,size", PREPROCESS_CASES)
def test_preprocess_noise(shapes, channels, order, size):
    fr, nz = frames(shapes), noise(channels, size)
    tensors = [dev(f if f.ndim == 3 else f[:, :, None]) for f in fr]
    unet, x = preprocess_noise_triton(tensors, size, channels, order, dev(nz), COEFS, SCALE, OFFSET)
    unet_ref, x_ref = preprocess_noise_ref(fr, size, channels, order, nz, COEFS)
    np.testing.assert_allclose(host(x), x_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(unet), unet_ref, rtol=0, atol=ATOL)


def test_stacked_pixels_single_pass_and_x_into_the_segmentation_input():
    fr = np.stack(frames([(40, 30, 3)] * 3))
    nz = noise(3, 16)
    _, pixels = preprocess_noise_triton(dev(fr), 16, 3, "RGB", None, None, 1.0, 0.0)
    np.testing.assert_allclose(host(pixels), preprocess_ref(list(fr), 16, 3, "RGB", normalize=False), rtol=0, atol=1e-4)
    seg = torch.full((3, 6, 16, 16), float("nan"), device=DEVICE)
    unet, _ = preprocess_noise_triton(dev(fr), 16, 3, "BGR", dev(nz), COEFS, SCALE, OFFSET, x_out=seg[:, :3],
                                      two_pass=False)
    unet_ref, x_ref = preprocess_noise_ref(list(fr), 16, 3, "BGR", nz, COEFS, two_pass=False)
    assert tuple(unet.shape) == (3, 3, 16, 16)
    np.testing.assert_allclose(host(unet), unet_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(seg[:, :3]), x_ref, rtol=0, atol=ATOL)
    assert torch.isnan(seg[:, 3:]).all()


def test_combine_and_in_place():
    x, eps, nz = combine_inputs()
    ref = combine_ref(x, eps, nz, COEFS, 1.0)
    np.testing.assert_allclose(host(combine_triton(dev(x), dev(eps), dev(nz), COEFS, 1.0)), ref, rtol=0, atol=ATOL)
    seg = torch.zeros((3, 6, 17, 17), device=DEVICE)
    seg[:, :3] = dev(x)
    assert combine_triton(seg[:, :3], dev(eps), dev(nz), COEFS, 1.0, out=seg) is seg
    np.testing.assert_allclose(host(seg), ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("k,sigma,image_t,pixel_t", SCORE_CASES)
def test_score(k, sigma, image_t, pixel_t):
    m = maps()
    got, ref = score_triton(dev(m), k, sigma, image_t, pixel_t), score_ref(m, k, sigma, image_t, pixel_t)
    np.testing.assert_allclose(host(got.maps), ref.maps, rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(got.scores), ref.scores, rtol=0, atol=ATOL)
    np.testing.assert_allclose(host(got.normalized), ref.normalized, rtol=0, atol=ATOL)
    if pixel_t is None:
        assert got.masks is None
    else:
        assert got.masks.dtype == torch.bool and tuple(got.masks.shape) == m.shape
        far = np.abs(ref.maps - pixel_t) > 1e-6
        np.testing.assert_array_equal(host(got.masks)[far], ref.masks[far])


def test_score_negative_values_and_ties():
    m = np.full((2, 8, 8), -0.25, np.float32)
    m[1] = np.random.default_rng(4).standard_normal((8, 8)).astype(np.float32)
    m[1, 0, :5] = 3.0
    for k in (1, 5, 6, 64):
        np.testing.assert_allclose(host(score_triton(dev(m), k).scores), score_ref(m, k).scores, rtol=0, atol=ATOL)


@pytest.mark.parametrize("emb", [False, True])
def test_groupnorm_silu(emb):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 5, 7, generator=g) * 3 + 1  # an offset mean: the shifted variance must hold
    w, b = torch.randn(8, generator=g), torch.randn(8, generator=g)
    e = torch.randn(2, 8, generator=g) if emb else None
    expect = groupnorm_silu_ref(x, 4, w, b, 1e-5, e)
    got = groupnorm_silu_triton(x.to(DEVICE), 4, w.to(DEVICE), b.to(DEVICE), 1e-5, None if e is None else e.to(DEVICE))
    torch.testing.assert_close(got.cpu(), expect, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_noise_triton([dev(np.zeros((4, 4, 3), np.float32))], 8, 3, "BGR", None, None, 1.0, 0.0)
    x, eps, nz = combine_inputs()
    with pytest.raises(ValueError, match="eps"):
        combine_triton(dev(x), dev(eps[:3]), dev(nz), COEFS, 1.0)
    with pytest.raises(ValueError, match="top_k"):
        score_triton(dev(maps()), 0)


def test_aot_compile_for_orin_and_hopper(tmp_path):
    """triton.compile(ASTSource(...), target=GPUTarget("cuda", 87|90, 32)) of every kernel, no GPU."""
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([sys.executable, "-m", "dad_edge.kernels.aot", "--arch", "87", "90", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for arch in (87, 90):
        cubins = sorted(tmp_path.glob(f"*_sm{arch}.cubin"))
        assert len(cubins) == 8 and all(c.stat().st_size > 1000 for c in cubins)
        assert f".target sm_{arch}" in (tmp_path / cubins[0].name.replace(".cubin", ".ptx")).read_text()

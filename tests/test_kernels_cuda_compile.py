"""The CUDA C kernels (kernels/*.cu) without a GPU: they build, and they compute the references.

- nvcc builds each file for sm_87 (Jetson Orin) and sm_90 (Hopper), SASS and PTX;
- NVRTC (cuda-python + nvidia-cuda-nvrtc), the runtime's fallback, compiles each too;
- the launch argument lists of kernels/cuda_loader.py match the kernels' signatures;
- compiled for the CPU with tests/cuda_emu (one OS thread per CUDA thread, barriers for
  __syncthreads) and launched through cuda_loader's own launch code, the kernels give the
  references' numbers. What only a GPU shows (timing, races the emulation cannot produce)
  is benchmarks/gpu_kernels.py's job.
"""
import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dad_edge.kernels import cuda_loader
from dad_edge.kernels.combine_ref import combine_ref
from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref
from dad_edge.kernels.score_ref import gaussian_taps, score_ref
from dad_edge.data.preprocess import OFFSET, SCALE

from cuda_emu_support import KERNEL_DIR, SOURCES, build_emulated_kernels
from kernel_cases import COEFS, PREPROCESS_CASES, SCORE_CASES, combine_inputs, frames, maps, noise

ARCHS = (87, 90)


def find_nvcc():
    for c in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/cuda-13.0/bin/nvcc"):
        if c and Path(c).is_file():
            return c
    return None


NVCC = find_nvcc()


def test_sources_present():
    assert {s.stem for s in SOURCES} == set(cuda_loader.MODULES)


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit not installed)")
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_nvcc_builds_sm87_and_sm90(src, tmp_path):
    """One fat binary per file, as setup.py builds it: SASS for sm_87 and sm_90 plus PTX."""
    out = tmp_path / f"{src.stem}.fatbin"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS] + ["-gencode=arch=compute_90,code=compute_90"]
    proc = subprocess.run([NVCC, "-O3", "--fatbin", "-std=c++14", "-Werror", "all-warnings", *gencode,
                           "-o", str(out), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cuobjdump = Path(NVCC).parent / "cuobjdump"
    if cuobjdump.is_file():
        listing = subprocess.run([str(cuobjdump), "--list-elf", "--list-ptx", str(out)],
                                 capture_output=True, text=True).stdout
        assert "sm_87" in listing and "sm_90" in listing, listing


def _nvrtc_error():
    try:
        from cuda.bindings import nvrtc
        err, *_ = nvrtc.nvrtcVersion()
        return None if int(err) == 0 else f"NVRTC unusable: {err!r}"
    except Exception as exc:  # noqa: BLE001 - import or library-load failure: skip with the reason
        return f"cuda-python with NVRTC not usable ({exc}); pip install cuda-python nvidia-cuda-nvrtc"


@pytest.mark.skipif(_nvrtc_error() is not None, reason=str(_nvrtc_error()))
@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_every_module(arch):
    for name in cuda_loader.MODULES:
        cubin = cuda_loader.nvrtc_compile(name, arch)
        assert cubin[:4] == b"\x7fELF"
        ptx = cuda_loader.nvrtc_compile(name, arch, ptx=True).decode()
        assert f".target sm_{arch}" in ptx
        for kernel in cuda_loader.MODULES[name]:
            assert f".entry {kernel}(" in ptx


def test_stale_fat_binaries_are_ignored(tmp_path, monkeypatch):
    (tmp_path / "combine.fatbin").write_bytes(b"fatbin")
    (tmp_path / "manifest.json").write_text('{"sources": {"combine.cu": "0000"}}')
    monkeypatch.setattr(cuda_loader, "BIN_DIR", tmp_path)
    assert cuda_loader.packaged_binary("combine") is None
    import hashlib
    digest = hashlib.sha256((KERNEL_DIR / "combine.cu").read_bytes()).hexdigest()
    (tmp_path / "manifest.json").write_text(f'{{"sources": {{"combine.cu": "{digest}"}}}}')
    assert cuda_loader.packaged_binary("combine") == b"fatbin"


# -- the kernels, run on the CPU through the loader's launch code ----------------------------


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """CudaKernels whose launches run tests/cuda_emu's CPU build of the .cu files."""
    kernels = build_emulated_kernels(tmp_path_factory.mktemp("emu"))
    if kernels is None:
        pytest.skip("no C++ compiler for the CPU emulation of the CUDA kernels")
    return kernels


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


@pytest.mark.parametrize("shapes,channels,order,size", PREPROCESS_CASES[::2])
@pytest.mark.parametrize("two_pass", [True, False])
def test_emulated_preprocess_noise(emulated, shapes, channels, order, size, two_pass):
    fr, nz = frames(shapes), noise(channels, size)
    b = len(fr)
    x = np.full((b, channels, size, size), np.nan, np.float32)
    unet = np.full(((2 if two_pass else 1) * b, channels, size, size), np.nan, np.float32)
    for i, f in enumerate(fr):  # one launch per frame, as for frames of mixed sizes
        f3 = np.ascontiguousarray(f if f.ndim == 3 else f[:, :, None])
        h, w, cin = f3.shape
        emulated.preprocess_noise(ptr(f3), 1, h, w, cin, ptr(x), x.strides[0] // 4, b, i, size, channels,
                                  order == "BGR", SCALE, OFFSET, ptr(nz), ptr(unet), COEFS, two_pass)
    unet_ref, x_ref = preprocess_noise_ref(fr, size, channels, order, nz, COEFS, two_pass)
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(unet, unet_ref, rtol=0, atol=1e-6)


def test_emulated_combine(emulated):
    x, eps, nz = combine_inputs()
    b, c, s, _ = x.shape
    out = np.full((b, 2 * c, s, s), np.nan, np.float32)
    emulated.combine(ptr(x), c * s * s, ptr(eps), ptr(nz), ptr(out), b, c, s, COEFS, 1.0)
    np.testing.assert_allclose(out, combine_ref(x, eps, nz, COEFS, 1.0), rtol=0, atol=1e-6)
    out2 = out.copy()
    out2[:, c:] = np.nan
    emulated.combine(ptr(out2), 2 * c * s * s, ptr(eps), ptr(nz), ptr(out2), b, c, s, COEFS, 1.0, copy_x=False)
    np.testing.assert_allclose(out2, out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("k,sigma,image_t,pixel_t", SCORE_CASES[1:4])
def test_emulated_score(emulated, k, sigma, image_t, pixel_t):
    m = np.ascontiguousarray(maps()[:, 0])
    b, h, w = m.shape
    scores, normalized = np.zeros(b, np.float32), np.zeros(b, np.float32)
    masks = np.zeros((b, h, w), np.uint8)
    smoothing, out = None, m
    if sigma > 0:
        taps = gaussian_taps(sigma)
        tmp, out = np.empty_like(m), np.empty_like(m)
        smoothing = (ptr(taps), (len(taps) - 1) // 2, ptr(tmp), ptr(out))
    emulated.score(ptr(m), b, h, w, k, ptr(scores), ptr(normalized), ptr(masks), pixel_t, image_t, smoothing)
    ref = score_ref(m, k, sigma, image_t, pixel_t)
    np.testing.assert_allclose(out, ref.maps, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, ref.scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(normalized, ref.normalized, rtol=0, atol=1e-6)
    if pixel_t is not None:
        far = np.abs(ref.maps - pixel_t) > 1e-6
        np.testing.assert_array_equal(masks.astype(bool)[far], ref.masks[far])


def test_emulated_topk_negative_values_and_ties(emulated):
    m = np.full((2, 8, 8), -0.25, np.float32)
    m[1] = np.random.default_rng(4).standard_normal((8, 8)).astype(np.float32)
    m[1, 0, :5] = 3.0
    for k in (1, 5, 6, 64):
        scores, normalized = np.zeros(2, np.float32), np.zeros(2, np.float32)
        emulated.score(ptr(m), 2, 8, 8, k, ptr(scores), ptr(normalized))
        np.testing.assert_allclose(scores, score_ref(m, k).scores, rtol=0, atol=1e-6)


def _gpu_error():
    try:
        from cuda.bindings import driver
        err, = driver.cuInit(0)
        return None if int(err) == 0 else f"no usable CUDA GPU ({err!r})"
    except Exception as exc:  # noqa: BLE001 - no cuda-python, or no driver library on this machine
        return f"no CUDA driver or cuda-python here ({type(exc).__name__})"


@pytest.mark.skipif(_gpu_error() is not None, reason=str(_gpu_error()))
def test_loader_on_a_gpu():
    """On a real GPU: load (fat binary or NVRTC) and run combine through device memory."""
    from cuda.bindings import driver
    x, eps, nz = combine_inputs()
    b, c, s, _ = x.shape
    with cuda_loader.CudaKernels() as kernels:
        bufs = {}
        for name, a in (("x", x), ("eps", eps), ("nz", nz), ("out", np.empty((b, 2 * c, s, s), np.float32))):
            bufs[name] = cuda_loader._check(driver.cuMemAlloc(a.nbytes), "cuMemAlloc")
            cuda_loader._check(driver.cuMemcpyHtoD(bufs[name], a.ctypes.data, a.nbytes), "cuMemcpyHtoD")
        kernels.combine(int(bufs["x"]), c * s * s, int(bufs["eps"]), int(bufs["nz"]), int(bufs["out"]), b, c, s,
                        COEFS, 1.0)
        out = np.empty((b, 2 * c, s, s), np.float32)
        cuda_loader._check(driver.cuMemcpyDtoH(out.ctypes.data, bufs["out"], out.nbytes), "cuMemcpyDtoH")
        for buf in bufs.values():
            driver.cuMemFree(buf)
    np.testing.assert_allclose(out, combine_ref(x, eps, nz, COEFS, 1.0), rtol=0, atol=1e-5)

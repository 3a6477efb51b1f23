"""Load and launch the CUDA C kernels (kernels/*.cu) through cuda-python, without torch.

For the TensorRT runtime: a frame is uploaded once as uint8, and preprocess + noise,
combine and score run on device buffers between the engines (device pointers are ints,
as cuda-python's cuMemAlloc or any other allocator gives them).

Module images, first that loads:
1. the fat binary setup.py built with nvcc (kernels/cuda_bin/<name>.fatbin), if it was
   built from the very source beside it (manifest.json holds the source hashes) and
   the driver accepts it for this GPU;
2. a cubin NVRTC compiles from the source for this GPU's exact architecture (the NVRTC
   of the machine's own toolkit, so PTX ISA versions never outrun the driver).
`cuda` is imported inside the functions: importing this module needs nothing.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

HERE = Path(__file__).parent
BIN_DIR = HERE / "cuda_bin"
THREADS = 256  # block size of every kernel (score.cu's topk_score assumes it)
# Module (= .cu file) -> its kernels (extern "C" names).
MODULES: Dict[str, Tuple[str, ...]] = {
    "preprocess_noise": ("preprocess_noise",),
    "combine": ("combine",),
    "score": ("smooth_rows", "smooth_cols", "topk_score"),
}


class CudaKernelError(RuntimeError):
    """A CUDA driver or NVRTC call failed; the message names the call and the error."""


def source(name: str) -> str:
    return (HERE / f"{name}.cu").read_text()


def _driver():
    """cuda-python's driver module: cuda.bindings.driver (12.6+) or cuda.cuda (older, JetPack 5)."""
    try:
        from cuda.bindings import driver
    except ImportError:
        from cuda import cuda as driver
    return driver


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        from cuda import nvrtc
    return nvrtc


def _check(result, what: str):
    """cuda-python returns (err, *values): raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaKernelError(f"{what} failed: {err!r}")
    return values[0] if len(values) == 1 else tuple(values)


def nvrtc_compile(name: str, arch: int, ptx: bool = False) -> bytes:
    """Compile kernels/<name>.cu with NVRTC: a cubin for sm_<arch>, or PTX for compute_<arch>."""
    nvrtc = _nvrtc()
    prog = _check(nvrtc.nvrtcCreateProgram(source(name).encode(), f"{name}.cu".encode(), 0, [], []),
                  "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={'compute' if ptx else 'sm'}_{arch}".encode(), b"-default-device"]
        err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(err) != 0:
            size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            log = b" " * size
            _check(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
            raise CudaKernelError(f"NVRTC could not compile {name}.cu for arch {arch}: {err!r}\n"
                                  f"{log.decode(errors='replace')}")
        get_size, get = (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX) if ptx else \
            (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
        size = _check(get_size(prog), "nvrtc size")
        image = b" " * size
        _check(get(prog, image), "nvrtc get image")
        return image
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def packaged_binary(name: str) -> Optional[bytes]:
    """The nvcc-built fat binary of kernels/<name>.cu, or None if absent or stale."""
    manifest, fatbin = BIN_DIR / "manifest.json", BIN_DIR / f"{name}.fatbin"
    if not (manifest.is_file() and fatbin.is_file()):
        return None
    digest = json.loads(manifest.read_text()).get("sources", {}).get(f"{name}.cu")
    if digest != hashlib.sha256((HERE / f"{name}.cu").read_bytes()).hexdigest():
        return None
    return fatbin.read_bytes()


def _arg(kind: str, value):
    """A kernel argument as the ctypes value cuLaunchKernel copies: p(ointer) i(nt) l(ong) f(loat)."""
    return {"p": ctypes.c_void_p, "i": ctypes.c_int, "l": ctypes.c_longlong, "f": ctypes.c_float}[kind](value)


class CudaKernels:
    """The kernels of kernels/*.cu loaded into the primary context of one GPU.

    Pointers are device addresses (int); `stream` is a CUstream handle or int (0 = default).
    Use as a context manager, or call close().
    """

    def __init__(self, device: int = 0):
        driver = _driver()
        self._driver = driver
        _check(driver.cuInit(0), "cuInit")
        self._device = _check(driver.cuDeviceGet(device), "cuDeviceGet")
        attr = driver.CUdevice_attribute
        major = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self._device),
                       "cuDeviceGetAttribute")
        minor = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self._device),
                       "cuDeviceGetAttribute")
        self.arch = 10 * major + minor
        # The primary context is the one the CUDA runtime and TensorRT use.
        self._context = _check(driver.cuDevicePrimaryCtxRetain(self._device), "cuDevicePrimaryCtxRetain")
        _check(driver.cuCtxSetCurrent(self._context), "cuCtxSetCurrent")
        self._modules, self._functions = [], {}
        self.origin: Dict[str, str] = {}  # module -> "fatbin" or "nvrtc sm_XY", for the record
        for name, kernels in MODULES.items():
            module = self._load(name)
            self._modules.append(module)
            for kernel in kernels:
                self._functions[kernel] = _check(driver.cuModuleGetFunction(module, kernel.encode()),
                                                 f"cuModuleGetFunction({kernel})")

    def _load(self, name: str):
        driver = self._driver
        image = packaged_binary(name)
        if image is not None:
            err, module = driver.cuModuleLoadData(image)
            if int(err) == 0:
                self.origin[name] = "fatbin"
                return module
        module = _check(driver.cuModuleLoadData(nvrtc_compile(name, self.arch)), f"cuModuleLoadData({name})")
        self.origin[name] = f"nvrtc sm_{self.arch}"
        return module

    def launch(self, kernel: str, grid: Sequence[int], args: Sequence[Tuple[str, object]], stream=0) -> None:
        """Launch `kernel` on (grid, THREADS) with args as (kind, value) pairs, see _arg."""
        values = [_arg(kind, value) for kind, value in args]
        params = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        gx, gy = (tuple(grid) + (1,))[:2]
        _check(self._driver.cuLaunchKernel(self._functions[kernel], gx, gy, 1, THREADS, 1, 1, 0, stream,
                                           ctypes.addressof(params), 0), f"cuLaunchKernel({kernel})")

    # -- the three stages ----------------------------------------------------------------

    def preprocess_noise(self, frames: int, n: int, h: int, w: int, cin: int, x: int, x_batch_stride: int,
                         batch: int, b0: int, size: int, channels: int, bgr: bool, scale: float, offset: float,
                         noise: int = 0, unet: int = 0, coefs=(0.0, 0.0, 0.0, 0.0), two_pass: bool = True,
                         stream=0) -> None:
        """n uint8 (h, w, cin) frames at `frames` -> x (and with noise, the U-Net input), as
        preprocess_noise_triton; the frames are samples b0 .. b0 + n - 1 of a batch of `batch`."""
        sa_s, sb_s, sa_l, sb_l = coefs
        self.launch("preprocess_noise", ((size * size + THREADS - 1) // THREADS, n), [
            ("p", frames), ("l", h * w * cin), ("i", h), ("i", w), ("i", cin),
            ("p", noise), ("p", unet), ("p", x), ("l", x_batch_stride), ("i", batch), ("i", b0),
            ("i", size), ("i", channels), ("i", int(bgr)), ("i", int(two_pass)), ("f", scale), ("f", offset),
            ("f", sa_s), ("f", sb_s), ("f", sa_l), ("f", sb_l)], stream)

    def combine(self, x: int, x_batch_stride: int, eps: int, noise: int, out: int, batch: int, channels: int,
                size: int, coefs, w: float, copy_x: bool = True, stream=0) -> None:
        """x, eps (2B, C, S, S), noise (2, C, S, S) -> out (B, 2C, S, S) = cat(x, x0_ng)."""
        n = channels * size * size
        sa_s, sb_s, sa_l, sb_l = coefs
        self.launch("combine", ((n + THREADS - 1) // THREADS, batch), [
            ("p", x), ("l", x_batch_stride), ("p", eps), ("p", noise), ("p", out), ("i", batch), ("i", n),
            ("f", sa_s), ("f", sb_s), ("f", sa_l), ("f", sb_l), ("f", sb_s * w), ("i", int(copy_x))], stream)

    def score(self, maps: int, batch: int, h: int, w: int, k: int, scores: int, normalized: int,
              masks: int = 0, pixel_threshold: Optional[float] = None, image_threshold: Optional[float] = None,
              smoothing: Optional[Tuple[int, int, int, int]] = None, stream=0) -> None:
        """maps (B, h, w) float32 -> scores, normalized (B,) and masks (B, h, w) uint8 (if given).

        smoothing = (taps, radius, tmp, out): device taps (2r + 1,) of score_ref.gaussian_taps
        and two (B, h, w) buffers; the blurred maps land in `out` and are scored.
        """
        if smoothing is not None:
            taps, radius, tmp, out = smoothing
            grid = ((h * w + THREADS - 1) // THREADS, batch)
            common = [("p", taps), ("i", h), ("i", w), ("i", radius)]
            self.launch("smooth_rows", grid, [("p", maps), ("p", tmp)] + common, stream)
            self.launch("smooth_cols", grid, [("p", tmp), ("p", out)] + common, stream)
            maps = out
        t = min(max(image_threshold, 1e-12), 1 - 1e-12) if image_threshold is not None else 0.5
        self.launch("topk_score", (batch,), [
            ("p", maps), ("i", h * w), ("i", k), ("p", masks if pixel_threshold is not None else 0),
            ("f", pixel_threshold or 0.0), ("i", int(image_threshold is not None)),
            ("f", t), ("f", 0.5 / t), ("f", 0.5 / (1 - t)), ("p", scores), ("p", normalized)], stream)

    def close(self) -> None:
        for module in self._modules:
            self._driver.cuModuleUnload(module)
        self._modules, self._functions = [], {}
        if self._context is not None:
            self._driver.cuDevicePrimaryCtxRelease(self._device)
            self._context = None

    def __enter__(self) -> "CudaKernels":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

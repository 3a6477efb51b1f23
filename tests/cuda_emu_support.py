"""The CUDA C kernels (kernels/*.cu) compiled for the CPU with tests/cuda_emu, behind a CudaKernels object.

Launches go through cuda_loader's own argument packing (each launch's argument kinds are checked
against the kernel's .cu signature) into the emulation's emu_launch_kernel: one OS thread per CUDA
thread, barriers for __syncthreads. Pointers are host addresses. `submit` (optional) receives each
launch as a callable with its arguments packed at launch time, so a fake stream can record it
(a captured CUDA graph holds a kernel's arguments as they were at capture).
"""
import ctypes
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

from dad_edge.kernels import cuda_loader

KERNEL_DIR = Path(cuda_loader.__file__).parent
SOURCES = sorted(KERNEL_DIR.glob("*.cu"))
EMU_DIR = Path(__file__).parent / "cuda_emu"


def kernel_signatures():
    """extern "C" kernel name -> argument kinds (p, l, i, f) parsed from the .cu sources."""
    sigs = {}
    for src in SOURCES:
        text = re.sub(r"//[^\n]*", "", src.read_text())
        for name, params in re.findall(r'extern "C" __global__ void (\w+)\((.*?)\)\s*\{', text, re.S):
            kinds = []
            for p in params.split(","):
                p = " ".join(p.split())
                kinds.append("p" if "*" in p else "l" if "long long" in p else "f" if p.startswith("float") else "i")
            sigs[name] = kinds
    return sigs


def build_emulated_kernels(folder: Path, submit: Optional[Callable] = None):
    """-> a CudaKernels whose launches run the CPU build of the .cu files (built into `folder`), or None
    where there is no C++ compiler. It records the names of the kernels it launched in `.launches`."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        return None
    lib_path = Path(folder) / "emu.so"
    proc = subprocess.run([cxx, "-std=c++17", "-O1", "-ffp-contract=off", "-pthread", "-shared", "-fPIC",
                           f"-I{KERNEL_DIR}", "-o", str(lib_path), str(EMU_DIR / "emu.cpp")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the CUDA kernels' CPU emulation did not build:\n{proc.stderr}")
    lib = ctypes.CDLL(str(lib_path))
    lib.emu_launch_kernel.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
    sigs = kernel_signatures()
    launches = []

    def launch(kernel, grid, args, stream=0):
        assert [kind for kind, _ in args] == sigs[kernel], f"{kernel}: loader arguments differ from the .cu signature"
        values = [cuda_loader._arg(kind, value) for kind, value in args]
        params = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        gx, gy = (tuple(grid) + (1,))[:2]

        def run(values=values, params=params):  # the packed arguments live as long as the work
            assert lib.emu_launch_kernel(kernel.encode(), gx, gy, cuda_loader.THREADS, ctypes.addressof(params)) == 0

        (submit or (lambda work: work()))(run)
        launches.append(kernel)

    kernels = object.__new__(cuda_loader.CudaKernels)  # no GPU: skip __init__'s driver calls
    kernels.launch = launch
    kernels.launches = launches
    kernels._modules, kernels._context = [], None  # close() has nothing to release
    return kernels

"""Packaging: `kernels/` and `export/` install as `dad_edge.kernels` / `dad_edge.export`.

Two optional build steps, neither of which can fail an install:
- the C extension `dad_edge._C` (CPU kernels on a pthread pool); without a compiler the
  package falls back to its numpy references;
- the CUDA kernels `kernels/*.cu`, compiled by the machine's nvcc (if any) into one fat
  binary per file for the architectures in DAD_EDGE_CUDA_ARCHS (default "87;90": Jetson
  Orin and Hopper; "none" skips). Without them the runtime compiles the sources with NVRTC.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "dad_edge" / "version.py").read_text()).group(1)
DEFAULT_CUDA_ARCHS = "87;90"


def subpackages(prefix: str, folder: str) -> list:
    """Every folder with an __init__.py below `folder`, named under `prefix`."""
    found = []
    for init in sorted((ROOT / folder).rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT / folder)
        found.append(".".join([prefix, *rel.parts]) if rel.parts else prefix)
    return found


def find_nvcc():
    """nvcc from DAD_EDGE_NVCC, CUDA_HOME, PATH or /usr/local/cuda, else None."""
    candidates = [os.environ.get("DAD_EDGE_NVCC"), shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    return next((c for c in candidates if c and Path(c).is_file()), None)


class BuildExt(build_ext):
    """build_ext that sets the C flags per compiler, then builds the CUDA fat binaries."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            flags, link = ["/O2", "/fp:precise"], []
        else:
            # No FMA contraction: the kernels keep the references' float32 rounding. No FP traps
            # (never used): lets the clamps become vector selects. Neither changes a result.
            flags, link = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-pthread"], ["-pthread"]
        for ext in self.extensions:
            ext.extra_compile_args += flags
            ext.extra_link_args += link
        super().build_extensions()

    def run(self):
        super().run()
        self.build_cuda()

    def build_cuda(self):
        archs = os.environ.get("DAD_EDGE_CUDA_ARCHS", DEFAULT_CUDA_ARCHS).replace(",", ";").strip()
        if archs.lower() in ("", "none", "0"):
            print("dad_edge: DAD_EDGE_CUDA_ARCHS=none; CUDA kernels will be compiled by NVRTC at run time")
            return
        nvcc = find_nvcc()
        if nvcc is None:
            print("dad_edge: no nvcc found; CUDA kernels will be compiled by NVRTC at run time")
            return
        arch_list = sorted({int(a.strip().removeprefix("sm_")) for a in archs.split(";") if a.strip()})
        if self.inplace:
            out_dir = ROOT / self.get_finalized_command("build_py").get_package_dir("dad_edge.kernels") / "cuda_bin"
        else:
            out_dir = Path(self.build_lib) / "dad_edge" / "kernels" / "cuda_bin"
        out_dir.mkdir(parents=True, exist_ok=True)
        # SASS for every arch, plus PTX of the highest for GPUs newer than the list.
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in arch_list]
        gencode.append(f"-gencode=arch=compute_{arch_list[-1]},code=compute_{arch_list[-1]}")
        manifest = {"archs": arch_list, "ptx": arch_list[-1], "nvcc": nvcc, "sources": {}}
        for src in sorted((ROOT / "kernels").glob("*.cu")):
            out = out_dir / (src.stem + ".fatbin")
            cmd = [nvcc, "-O3", "--fatbin", "-std=c++14", *gencode, "-o", str(out), str(src)]
            print("dad_edge:", " ".join(cmd))
            try:
                subprocess.run(cmd, check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                print(f"dad_edge: nvcc failed on {src.name} ({exc}); it will be compiled by NVRTC at run time")
                out.unlink(missing_ok=True)
                continue
            # The loader uses a fat binary only if it was built from the source beside it.
            manifest["sources"][src.name] = hashlib.sha256(src.read_bytes()).hexdigest()
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))


c_extension = Extension(
    "dad_edge._C",
    sources=["kernels/csrc/dad_edge_C.c"],
    optional=True,  # no compiler: install anyway; dad_edge.ops falls back to numpy
)

setup(
    version=VERSION,
    packages=subpackages("dad_edge", "dad_edge") + subpackages("dad_edge.kernels", "kernels")
    + subpackages("dad_edge.export", "export"),
    package_dir={"dad_edge": "dad_edge", "dad_edge.kernels": "kernels", "dad_edge.export": "export"},
    # py.typed: the package ships its type hints (PEP 561) for mypy / pyright users of the API.
    package_data={"dad_edge": ["py.typed"],
                  "dad_edge.kernels": ["*.cu", "*.cuh", "csrc/*.c", "csrc/*.h", "cuda_bin/*"]},
    ext_modules=[c_extension],
    cmdclass={"build_ext": BuildExt},
)

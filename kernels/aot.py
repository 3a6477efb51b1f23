"""Ahead-of-time compile of the Triton kernels for given GPU architectures, with no GPU.

    python -m dad_edge.kernels.aot --arch 87 90 [--out DIR]

compiles each kernel in the specialisation the wrappers launch (RGB from BGR, gray, with
and without noise, ...) to PTX and cubin for sm_87 (Jetson Orin), sm_90 (Hopper) or any
other listed architecture, proving they build; --out writes the .ptx/.cubin files.
It needs the real Triton compiler: run it without TRITON_INTERPRET=1.
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Dict, List, Tuple

# (module, kernel, runtime argument types in order, constexpr values): one specialisation each.
_PRE = ["*u8", "*fp32", "*fp32", "*fp32"] + ["i32"] * 7 + ["fp32"] * 6
_SCORE_BLUR = ["*fp32", "*fp32", "*fp32", "i32", "i32", "i32"]
SPECS: List[Tuple[str, str, List[str], Dict[str, object]]] = [
    ("preprocess_noise_triton", "_preprocess_noise_kernel", _PRE,
     dict(CIN=3, C=3, BGR=True, WITH_NOISE=True, WITH_LARGE=True, BLOCK=1024)),
    ("preprocess_noise_triton", "_preprocess_noise_kernel", _PRE,
     dict(CIN=3, C=1, BGR=True, WITH_NOISE=True, WITH_LARGE=False, BLOCK=1024)),
    ("preprocess_noise_triton", "_preprocess_noise_kernel", _PRE,
     dict(CIN=1, C=3, BGR=False, WITH_NOISE=False, WITH_LARGE=False, BLOCK=1024)),
    ("combine_triton", "_combine_kernel", ["*fp32"] * 4 + ["i32"] * 3 + ["fp32"] * 5, dict(COPY_X=True, BLOCK=1024)),
    ("score_triton", "_smooth_rows_kernel", _SCORE_BLUR, dict(BLOCK=1024)),
    ("score_triton", "_smooth_cols_kernel", _SCORE_BLUR, dict(BLOCK=1024)),
    ("score_triton", "_topk_score_kernel", ["*fp32", "*u8", "*fp32", "*fp32", "i32", "i32"] + ["fp32"] * 4,
     dict(HAS_IMAGE=True, HAS_PIXEL=True, BLOCK=1024)),
    ("groupnorm_silu_triton", "_groupnorm_silu_kernel", ["*fp32"] * 5 + ["i32"] * 3 + ["fp32"],
     dict(HAS_EMB=True, BLOCK=1024)),
]


def compile_kernel(module: str, kernel: str, types: List[str], constexprs: Dict[str, object], arch: int):
    """triton.compile of one specialisation for sm_<arch>; returns the CompiledKernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = getattr(importlib.import_module(f"dad_edge.kernels.{module}"), kernel)
    if not isinstance(fn, JITFunction):
        raise RuntimeError("TRITON_INTERPRET=1 is set: AOT compilation needs the real compiler; unset it")
    runtime = [a for a in fn.arg_names if a not in constexprs]
    if len(runtime) != len(types):
        raise ValueError(f"{kernel}: {len(types)} types for arguments {runtime}")
    signature = dict(zip(runtime, types))
    signature.update({name: "constexpr" for name in constexprs})
    signature = {name: signature[name] for name in fn.arg_names}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[87, 90], help="SM versions, e.g. 87 90")
    parser.add_argument("--out", type=Path, help="folder for the .ptx and .cubin files")
    args = parser.parse_args(argv)
    for arch in args.arch:
        for module, kernel, types, constexprs in SPECS:
            start = time.perf_counter()
            compiled = compile_kernel(module, kernel, types, constexprs, arch)
            tag = "_".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in constexprs.items() if k != "BLOCK")
            name = f"{kernel.strip('_')}{'_' + tag if tag else ''}_sm{arch}"
            ptx, cubin = compiled.asm["ptx"], compiled.asm["cubin"]
            print(f"{name}: ptx {len(ptx)} chars, cubin {len(cubin)} bytes, "
                  f"{compiled.metadata.num_warps} warps, {time.perf_counter() - start:.1f} s")
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"{name}.ptx").write_text(ptx)
                (args.out / f"{name}.cubin").write_bytes(cubin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

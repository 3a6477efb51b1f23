"""Fused kernels for the memory-bound stages between the networks (installed as dad_edge.kernels).

Each operation has one reference (`*_ref`, plain numpy/torch: the truth for every test) and
faster forms beside it:

| operation           | reference               | Triton (torch on CUDA)     | CUDA C (TensorRT) | C extension (CPU) |
|---------------------|-------------------------|----------------------------|-------------------|-------------------|
| preprocess + noise  | preprocess_noise_ref.py | preprocess_noise_triton.py | preprocess_noise.cu | csrc/dad_edge_C.c |
| norm-guided combine | combine_ref.py          | combine_triton.py          | combine.cu        | csrc/dad_edge_C.c |
| smooth + top-k score| score_ref.py            | score_triton.py            | score.cu          | csrc/dad_edge_C.c |
| GroupNorm + SiLU    | groupnorm_silu_ref.py   | groupnorm_silu_triton.py   | (TensorRT's own)  | (ORT's own)       |

Host wrappers: c_ext.py (C extension), cuda_loader.py (CUDA C through cuda-python), and
aot.py compiles the Triton kernels ahead of time for a GPU architecture.

Callers do not pick a form: `dad_edge.runtime.ops` does. Nothing heavy is imported here; the
Triton modules import triton, cuda_loader imports cuda-python inside its functions.
"""

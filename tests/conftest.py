"""Shared test settings.

Torch's CPU thread pool is limited to one thread for the whole test session (override
with DAD_EDGE_TEST_THREADS=N). On a small machine shared with other jobs, torch's default
of one thread per core oversubscribes the CPU: a 2-epoch tiny training run measured 35 s
with 2 threads against 2 s with 1, and the CLI demo 50 s against 8 s. The small models
of the tests gain nothing from more threads.
"""
import os

try:
    import torch
except ImportError:  # the runtime-only install: tests that need torch skip themselves
    torch = None

if torch is not None:
    torch.set_num_threads(int(os.environ.get("DAD_EDGE_TEST_THREADS", "1")))

# Without a GPU, Triton kernels run in its interpreter. The switch is read when Triton is
# first imported, and any test may import it first (torch.onnx export does, through
# torch's compiler stack), so it is set here, before every test module.
if torch is None or not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

"""dad_edge.runtime.ops, the operator seam: which form it picks, and that every form gives the same answers.

CPU arrays go to the C extension when it is built, else to the numpy reference; CUDA
tensors to Triton (checked here under the interpreter by forcing impl="triton").
"""
import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel module loads

from dad_edge.runtime import ops
from dad_edge.model.config import preset  # noqa: E402
from dad_edge.kernels import c_ext  # noqa: E402
from dad_edge.kernels.combine_ref import combine_ref  # noqa: E402
from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref  # noqa: E402
from dad_edge.model.schedule import eval_coefficients  # noqa: E402
from dad_edge.kernels.score_ref import score_ref  # noqa: E402
from dad_edge.artifacts.metadata import Thresholds  # noqa: E402
from dad_edge.data.preprocess import to_pixels  # noqa: E402

from kernel_cases import combine_inputs, frames, maps, noise  # noqa: E402

HAVE_C = c_ext.C_ERROR is None
CPU_FORMS = ["reference"] + (["c"] if HAVE_C else [])
CFG = preset("tiny", smoothing_sigma=1.0)  # 32 x 32, top-k 4
ATOL = 1e-6


@pytest.fixture
def no_c_extension(monkeypatch):
    monkeypatch.setattr(c_ext, "C_ERROR", "dad_edge._C is not built (test)")
    monkeypatch.setattr(c_ext, "_C", None)


def test_available_reports_the_forms():
    have = ops.available()
    assert have["c"] == HAVE_C and isinstance(have["triton"], bool) and isinstance(have["cuda_python"], bool)
    assert (have["c_threads"] >= 1) == HAVE_C
    assert set(have["reasons"]) <= {"c", "triton", "cuda_python"}


def test_pick():
    assert ops.pick("preprocess_noise") == ("c" if HAVE_C else "reference")
    assert ops.pick("score", on_cuda=True) == ("triton" if ops.available()["triton"] else "reference")
    assert ops.pick("groupnorm_silu") == "reference"  # CPU: torch's own
    assert ops.pick("combine", impl="reference") == "reference"
    with pytest.raises(ValueError, match="impl"):
        ops.pick("combine", impl="cuda")
    with pytest.raises(ValueError, match="CPU arrays"):
        ops.pick("combine", on_cuda=True, impl="c")
    with pytest.raises(ValueError, match="unknown op"):
        ops.pick("resize")


def test_without_the_c_extension_the_reference_runs(no_c_extension):
    assert ops.pick("preprocess_noise") == "reference" and ops.pick("score") == "reference"
    assert ops.available()["c"] is False and "not built" in ops.available()["reasons"]["c"]
    with pytest.raises(RuntimeError, match="not built"):
        ops.pick("score", impl="c")
    fr, nz = frames([(40, 33, 3)] * 2), noise(3, 32)
    unet, x = ops.preprocess_noise(fr, CFG, nz)
    unet_ref, x_ref = preprocess_noise_ref(fr, 32, 3, "BGR", nz, eval_coefficients(CFG))
    np.testing.assert_array_equal(unet, unet_ref)


@pytest.mark.parametrize("impl", CPU_FORMS)
@pytest.mark.parametrize("denoiser", ["two_pass", "single_pass"])
def test_preprocess_noise_numpy_and_torch(impl, denoiser):
    cfg = CFG.replace(denoiser=denoiser)
    fr, nz = frames([(40, 33, 3), (21, 50, 3)]), noise(3, 32)
    unet_ref, x_ref = preprocess_noise_ref(fr, 32, 3, "RGB", nz, eval_coefficients(cfg), denoiser == "two_pass")
    unet, x = ops.preprocess_noise(fr, cfg, nz, "RGB", impl=impl)
    assert isinstance(unet, np.ndarray) and unet.shape == unet_ref.shape
    np.testing.assert_allclose(unet, unet_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=ATOL)
    unet_t, x_t = ops.preprocess_noise(fr, cfg, torch.from_numpy(nz), "RGB", impl=impl)  # torch in -> torch out
    assert isinstance(unet_t, torch.Tensor)
    np.testing.assert_allclose(unet_t.numpy(), unet_ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("impl", CPU_FORMS)
def test_preprocess_into_buffers_then_combine_in_place(impl):
    fr, nz = np.stack(frames([(40, 33, 3)] * 3)), noise(3, 32)
    unet_buf, seg = np.zeros((6, 3, 32, 32), np.float32), np.zeros((3, 6, 32, 32), np.float32)
    unet, x = ops.preprocess_noise(fr, CFG, nz, out=unet_buf, x_out=seg[:, :3], impl=impl)
    assert unet is unet_buf
    _, x_ref = preprocess_noise_ref(list(fr), 32, 3, "BGR", nz, eval_coefficients(CFG))
    np.testing.assert_allclose(seg[:, :3], x_ref, rtol=0, atol=ATOL)
    eps = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    assert ops.combine(seg[:, :3], eps, nz, CFG, out=seg, impl=impl) is seg
    expect = combine_ref(x_ref, eps, nz, eval_coefficients(CFG), CFG.guidance_w)
    np.testing.assert_allclose(seg, expect, rtol=0, atol=ATOL)


@pytest.mark.parametrize("impl", CPU_FORMS)
def test_combine_numpy_torch_and_single_pass(impl):
    x, eps, nz = combine_inputs(c=3, s=32)
    expect = combine_ref(x, eps, nz, eval_coefficients(CFG), CFG.guidance_w)
    np.testing.assert_allclose(ops.combine(x, eps, nz, CFG, impl=impl), expect, rtol=0, atol=ATOL)
    got = ops.combine(torch.from_numpy(x), torch.from_numpy(eps), torch.from_numpy(nz), CFG, impl=impl)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), expect, rtol=0, atol=ATOL)
    single = ops.combine(x, eps[:3], nz, CFG.replace(denoiser="single_pass"), impl=impl)
    np.testing.assert_array_equal(single, np.concatenate([x, eps[:3].clip(-1, 1)], axis=1))


@pytest.mark.parametrize("impl", CPU_FORMS)
def test_score(impl):
    m = maps(h=32, w=32)
    for thresholds in (None, Thresholds(image=0.4, pixel=0.7)):
        got = ops.score(m, CFG, thresholds, impl=impl)
        ref = score_ref(m, CFG.top_k, CFG.smoothing_sigma, getattr(thresholds, "image", None),
                        getattr(thresholds, "pixel", None))
        np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=ATOL)
        np.testing.assert_allclose(got.normalized, ref.normalized, rtol=0, atol=ATOL)
        np.testing.assert_allclose(got.maps, ref.maps, rtol=0, atol=ATOL)
        assert (got.masks is None) == (thresholds is None)
    raw = ops.score(torch.from_numpy(m), CFG, smooth=False, impl=impl)
    assert isinstance(raw.scores, torch.Tensor) and torch.equal(raw.maps, torch.from_numpy(m))


@pytest.mark.parametrize("impl", CPU_FORMS)
def test_preprocess_pixels(impl):
    fr = frames([(25, 19), (25, 19, 4)])
    got = ops.preprocess(fr, 16, 3, "BGR", normalize=False, impl=impl)
    np.testing.assert_allclose(got, np.stack([to_pixels(f, 16, 3, "BGR") for f in fr]), rtol=0, atol=1e-4)
    assert isinstance(ops.preprocess(fr, 16, 3, device="cpu", impl=impl), torch.Tensor)


def test_groupnorm_silu_on_cpu_is_torch():
    norm = torch.nn.GroupNorm(4, 8)
    x, emb = torch.randn(2, 8, 5, 5), torch.randn(2, 8)
    expect = torch.nn.functional.silu(norm(x + emb[:, :, None, None]))
    torch.testing.assert_close(ops.groupnorm_silu(x, norm, emb), expect, rtol=0, atol=0)


def test_triton_form_through_the_seam():
    """impl="triton" on CPU tensors runs the Triton kernels (interpreted here)."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("this check uses the Triton interpreter; the GPU runs are in test_kernels_triton.py")
    fr, nz = frames([(40, 33, 3), (40, 33, 3)]), noise(3, 32)
    unet, x = ops.preprocess_noise(fr, CFG, torch.from_numpy(nz), impl="triton")
    unet_ref, x_ref = preprocess_noise_ref(fr, 32, 3, "BGR", nz, eval_coefficients(CFG))
    np.testing.assert_allclose(unet.numpy(), unet_ref, rtol=0, atol=ATOL)
    eps = torch.randn(4, 3, 32, 32)
    seg = ops.combine(x, eps, torch.from_numpy(nz), CFG, impl="triton")
    expect = combine_ref(x_ref, eps.numpy(), nz, eval_coefficients(CFG), CFG.guidance_w)
    np.testing.assert_allclose(seg.numpy(), expect, rtol=0, atol=ATOL)
    m = maps(h=32, w=32)
    got = ops.score(torch.from_numpy(m), CFG, Thresholds(image=0.4, pixel=0.7), impl="triton")
    np.testing.assert_allclose(got.scores.numpy(), score_ref(m, CFG.top_k, 1.0, 0.4, 0.7).scores, rtol=0, atol=ATOL)


def test_cpu_path_imports_neither_torch_nor_triton():
    """The ONNX Runtime / CPU path must stay light: ops on numpy arrays load no torch, no triton."""
    import subprocess
    import sys
    code = ("import sys, numpy as np\n"
            "from dad_edge import ops\n"
            "from dad_edge.model.config import preset\n"
            "cfg = preset('tiny')\n"
            "ops.available()\n"
            "u, x = ops.preprocess_noise([np.zeros((40, 40, 3), np.uint8)], cfg, np.zeros((2, 3, 32, 32), np.float32))\n"
            "ops.combine(x, np.zeros((2, 3, 32, 32), np.float32), np.zeros((2, 3, 32, 32), np.float32), cfg)\n"
            "ops.score(np.random.rand(1, 32, 32).astype(np.float32), cfg)\n"
            "print(sorted(m for m in ('torch', 'triton', 'cuda.bindings') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_triton_on_cpu_tensors_without_the_interpreter_is_a_clear_error(monkeypatch):
    """Compiled Triton only takes CUDA tensors: asking for it on CPU tensors names the fix instead of
    failing inside Triton's launcher (seen on an H100 machine, where the interpreter is off)."""
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA tensors.*device='cuda'"):
        ops.pick("combine", on_cuda=False, impl="triton")
    assert ops.pick("combine", on_cuda=True, impl="triton") == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ops.pick("combine", on_cuda=False, impl="triton") == "triton"


def test_availability_is_looked_up_once(monkeypatch):
    """find_spec runs once per module, not on every GroupNorm of a fused forward."""
    import importlib.util

    from dad_edge.runtime import ops as seam

    calls = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: calls.append(name) or real(name, *a))
    seam._missing.cache_clear()
    try:
        for _ in range(5):
            seam.available()
            seam.pick("groupnorm_silu", on_cuda=True)
        assert sorted(set(calls)) == sorted(calls) and "triton" in calls
    finally:
        seam._missing.cache_clear()


# -- dispatch as a table per op, one way out ---------------------------------------------------------


def test_every_op_is_a_table_of_forms():
    assert ops.OPS == ("preprocess", "preprocess_noise", "combine", "score", "groupnorm_silu")
    for op, table in ops.TABLES.items():
        assert "reference" in table and set(table) <= set(ops.FORMS), op
    assert set(ops.TABLES["groupnorm_silu"]) == {"triton", "reference"}  # torch's own on the CPU: no C form
    with pytest.raises(ValueError, match="no 'c' form"):
        ops.pick("groupnorm_silu", impl="c")
    for op in ("preprocess", "preprocess_noise", "combine", "score"):
        assert ops.pick(op) == ("c" if HAVE_C else "reference")  # the table's C form where it is built


@pytest.mark.parametrize("impl", CPU_FORMS)
def test_ops_call_the_form_their_table_holds(impl, monkeypatch):
    """Each op calls TABLES[op][form]: a form put in the table is the one that runs."""
    calls = []
    real = ops.TABLES["combine"][impl]
    monkeypatch.setitem(ops.TABLES["combine"], impl, lambda *a: calls.append(impl) or real(*a))
    x, eps, nz = combine_inputs(c=3, s=32)
    got = ops.combine(x, eps, nz, CFG, impl=impl)
    assert calls == [impl]
    np.testing.assert_allclose(got, combine_ref(x, eps, nz, eval_coefficients(CFG), CFG.guidance_w), rtol=0, atol=ATOL)
    ops.combine(x, eps, nz, CFG)  # automatic: the C form where built, else the reference
    assert calls == [impl] + ([impl] if impl == ops.pick("combine") else [])


def test_forced_reference_needs_no_availability_lookup(monkeypatch):
    """A fused fp16 forward forces the reference GroupNorm per res-block: no machine survey per call."""
    def survey():
        raise AssertionError("available() called")

    monkeypatch.setattr(ops, "available", survey)
    assert ops.pick("groupnorm_silu", on_cuda=True, impl="reference") == "reference"
    norm = torch.nn.GroupNorm(2, 4)
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(ops.groupnorm_silu(x, norm, impl="reference"), torch.nn.functional.silu(norm(x)))


def test_output_helper():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert ops._output(a) is a and ops._output(None) is None
    t = ops._output(a, device="cpu")  # numpy result, torch asked for: the same memory as a tensor
    assert isinstance(t, torch.Tensor) and np.shares_memory(t.numpy(), a)
    out = np.zeros_like(a)
    assert ops._output(a, out) is out and np.array_equal(out, a)  # copied into out
    view = np.zeros((2, 6), np.float32)[:, :3]
    view[...] = 7
    assert ops._output(view, view) is view and (view == 7).all()  # the form wrote into out already
    out_t = torch.zeros(2, 3)
    assert ops._output(a, out_t) is out_t and torch.equal(out_t, torch.from_numpy(a))  # numpy into torch
    shared = torch.zeros(2, 3)
    arr = shared.numpy()
    arr[...] = 5  # a C form writes through the numpy view of the caller's tensor
    assert ops._output(arr, shared) is shared and (shared == 5).all()
    res = torch.ones(2, 3)
    assert ops._output(res, out_t) is out_t and torch.equal(out_t, res)  # torch into torch
    assert ops._output(out_t, out_t) is out_t  # Triton forms return out itself

"""benchmarks/gpu_variants.py (issue #14 item 3): every row runs the exported function and is compared with fp32.

Without a GPU: --smoke runs the CPU-capable rows once (tiny preset) and --cpu takes the timed path there;
plain mode stops with a clear message. With a GPU: the CUDA-only rows (TF32, cuDNN benchmark, graphs) run too.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_variants.py"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_smoke_rows_agree_with_fp32(tmp_path):
    out = tmp_path / "rows.json"
    proc = _run("--smoke", "--method", "seg", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"fp32", "fp16", "bf16", "fp16-cl"}  # the CUDA-only rows are left out on a CPU
    assert rows["fp32"]["max_map_diff"] == 0.0
    assert rows["fp16"]["max_map_diff"] < 5e-3 and rows["bf16"]["max_map_diff"] < 3e-2
    assert rows["fp16-cl"]["channels_last"] and rows["fp16-cl"]["max_map_diff"] < 5e-3
    assert "error" not in json.dumps(rows)


def test_timed_path_on_the_cpu(tmp_path):
    out = tmp_path / "rows.json"
    proc = _run("--cpu", "--preset", "tiny", "--batch", "2", "--only", "fp16", "--iters", "2", "--warmup", "1",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "fp16"]
    assert all(r["images_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 and r["percent_peak"] > 0 for r in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_without_a_gpu_it_says_so():
    proc = _run()
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA-only rows need a CUDA GPU")
def test_cuda_rows(tmp_path):
    out = tmp_path / "rows.json"
    proc = _run("--preset", "tiny", "--batch", "2", "--iters", "3", "--warmup", "1", "--only", "fp32-tf32",
                "fp16-cudnn-bench", "fp16+graph", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "fp32-tf32", "fp16-cudnn-bench", "fp16+graph"]
    assert all("error" not in r and r["images_per_s"] > 0 for r in rows)

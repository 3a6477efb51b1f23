"""Multi-process training (#16 part 4): 2 processes under torchrun with gloo on the CPU, the tiny preset on
tiny demo data; rank 0 writes the usual files, `--resume` goes on from them, `dad-edge eval` reads the
result. The sharding of the data and the per-rank anomalies are checked directly, without processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed  # noqa: E402

from dad_edge.artifacts.checkpoint import read_tensors  # noqa: E402
from dad_edge.data.demo import build_demo_dataset  # noqa: E402
from dad_edge.data.synthetic import AnomalySynthesizer  # noqa: E402
from dad_edge.training.batches import SyntheticBatches  # noqa: E402
from dad_edge.training.distributed import Ranks, shard  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")


def _batches(n_images: int, batch_size: int = 4) -> SyntheticBatches:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), np.uint8)
    synth = AnomalySynthesizer(32, 3, anomaly_prob=1.0)
    return SyntheticBatches(images, [f"{i}" for i in range(n_images)], synth, batch_size, seed=5, shuffle=True)


def test_ranks_take_disjoint_shares_and_draw_their_own_anomalies():
    base = _batches(16)  # 4 global batches
    shares = [shard(base, Ranks(r, 2, torch.device("cpu"))) for r in range(2)]
    assert shard(base, Ranks()) is base  # one process: untouched
    for epoch in (0, 1):
        own = [[i for b in s._batches(epoch) for i in b] for s in shares]
        assert len(shares[0]) == len(shares[1]) == 2
        assert not set(own[0]) & set(own[1]) and sorted(own[0] + own[1]) == list(range(16))
    # The same image on two ranks (as where shares wrap around) gets different anomalies: seed + rank.
    a, b = (s._sample(0, 3)[0] for s in shares)
    assert not np.array_equal(a, b)
    assert np.array_equal(shares[0]._sample(0, 3)[0], base._sample(0, 3)[0])  # rank 0 draws as one process


def test_a_set_smaller_than_the_ranks_wraps_around():
    base = _batches(4)  # one global batch
    shares = [shard(base, Ranks(r, 3, torch.device("cpu"))) for r in range(3)]
    assert [len(s) for s in shares] == [1, 1, 1]
    assert all(s._batches(0) == base._batches(0) for s in shares)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("ddp_data"), size=32, n_train=16, n_test_good=4,
                              n_test_per_defect=3)


def _torchrun(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dad_edge", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def test_two_gloo_processes_train_resume_and_eval_reads_the_model(data, tmp_path, capsys):
    from dad_edge.cli import main

    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--preset", "tiny", "--batch-size", "4", "--device", "cpu"]
    proc = _torchrun(common + ["--epochs", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1:") == 1  # rank 0 alone reports and writes
    _, meta = read_tensors(out / "model.safetensors")
    assert meta["kind"] == "checkpoint" and meta["training"]["epochs"] == 1
    # 16 images, 10 % held out: 14 train -> 4 global batches of 4 (the last of 2) -> 2 steps per rank.
    assert meta["training"]["steps"] == 2
    proc = _torchrun(common + ["--epochs", "2", "--resume"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed" in proc.stdout and proc.stdout.count("epoch 2:") == 1
    _, state = read_tensors(out / "train_state.safetensors")
    assert state["train_state"]["epoch"] == 2 and len(state["train_state"]["history"]) == 2
    assert not list(out.glob(".*.tmp"))  # atomic writes left nothing behind
    capsys.readouterr()
    assert main(["eval", str(out / "model.safetensors"), "--data", str(data), "--device", "cpu", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["image_auroc"] <= 1.0


def test_two_gloo_processes_distil_a_student(data, tmp_path):
    """distill under torchrun: the ranks share the batches, rank 0 alone reports and writes, and every rank
    leaves the job after the last save (training/train.py run_and_leave, as train does)."""
    from dad_edge.cli import main

    teacher = tmp_path / "teacher"
    assert main(["train", "--data", str(data), "--out", str(teacher), "--preset", "tiny", "--batch-size", "4",
                 "--device", "cpu", "--epochs", "1", "--quiet", "--method", "diffusionad"]) == 0
    out = tmp_path / "student"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dad_edge",
           "distill", "--teacher", str(teacher / "model.safetensors"), "--data", str(data), "--out", str(out),
           "--preset", "tiny", "--batch-size", "4", "--device", "cpu", "--epochs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1:") == 1
    _, meta = read_tensors(out / "model.safetensors")
    assert meta["training"]["epochs"] == 1 and meta["distillation"]["teacher"]["config_hash"]
    assert meta["training"]["steps"] == 2  # each rank took its share of the 4 global batches


RANK_VALUES = """
import sys
from pathlib import Path
import torch
from dad_edge.training import distributed
ranks = distributed.setup(torch.device("cpu"))
own = 0.25 + ranks.rank  # each rank's own clock reads differently
line = f"from_writer {ranks.from_writer(own)!r} agree {ranks.agree(ranks.rank == 1)!r}"
(Path(sys.argv[1]) / f"rank{ranks.rank}.txt").write_text(line)  # a file each: the ranks' stdout lines interleave
ranks.close(synchronize=True)
"""


def test_every_rank_follows_rank_0s_progress(tmp_path):
    # The schedule (rates, the full-resolution switch) reads its progress through Ranks.from_writer: one
    # value on every rank, rank 0's, whatever each rank's clock says; agree() is true on all if on any.
    script = tmp_path / "ranks.py"
    script.write_text(RANK_VALUES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "from_writer 0.25 agree True"
    assert Ranks().from_writer(0.7) == 0.7  # one process: its own value, no collective

"""CPU training in several processes (training/processes.py): the default count, its checks, each rank's
share of every batch, and `dad-edge train` itself in 2 real processes over gloo: the recorded run, its
errors coming back once and clearly, and no rank left running when the launcher is SIGKILLed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed  # noqa: E402

from dad_edge.artifacts.atomic import remove_stale_temps  # noqa: E402
from dad_edge.artifacts.checkpoint import read_tensors  # noqa: E402
from dad_edge.data.demo import build_demo_dataset  # noqa: E402
from dad_edge.data.synthetic import AnomalySynthesizer  # noqa: E402
from dad_edge.errors import ConfigError  # noqa: E402
from dad_edge.training import processes  # noqa: E402
from dad_edge.training.batches import SyntheticBatches  # noqa: E402
from dad_edge.training.distributed import Ranks, shard  # noqa: E402
from dad_edge.training.recipe import resolve_recipe  # noqa: E402

needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")


def test_default_is_one_process_and_auto_is_one_per_core_dividing_the_batch(monkeypatch):
    monkeypatch.delenv(processes.ENV_DEFAULT, raising=False)
    assert processes.default_processes(16) == 1
    assert processes.per_core_processes(16, cores=2) == 2
    assert processes.per_core_processes(8, cores=2) == 2
    assert processes.per_core_processes(16, cores=1) == 1
    assert processes.per_core_processes(4, cores=2) == 1  # shares under MIN_RANK_BATCH images
    assert processes.per_core_processes(16, cores=3) == 2  # 3 does not divide 16
    assert processes.per_core_processes(16, cores=64) == 4  # 16 / MIN_RANK_BATCH
    assert processes.per_core_processes(64, cores=64) == processes.MAX_CPU_PROCESSES
    monkeypatch.setenv(processes.ENV_DEFAULT, "2")
    assert processes.default_processes(16) == 2
    assert processes.default_processes(2) == 1  # shares of 1 image: not for BatchNorm
    monkeypatch.setattr(processes, "usable_cores", lambda: 4)
    monkeypatch.setenv(processes.ENV_DEFAULT, "auto")
    assert processes.default_processes(16) == 4
    monkeypatch.setenv(processes.ENV_DEFAULT, "two")
    with pytest.raises(ConfigError, match="DAD_EDGE_CPU_PROCESSES"):
        processes.default_processes(16)


def test_recipe_records_processes_and_refuses_bad_counts(monkeypatch):
    monkeypatch.delenv(processes.ENV_DEFAULT, raising=False)
    monkeypatch.setattr(processes, "usable_cores", lambda: 2)
    assert resolve_recipe("compact", 256, "cpu", 300, 700).processes == 1
    assert resolve_recipe("compact", 256, "cpu", 300, 700, processes="auto").processes == 2
    assert resolve_recipe("compact", 256, "cpu", 300, 700, batch_size=4, processes="auto").processes == 1
    assert resolve_recipe("compact", 256, "cuda", 300, 700, processes="auto").processes == 1
    with pytest.raises(ConfigError, match="divide the batch size"):
        resolve_recipe("compact", 256, "cpu", 300, 700, processes=3)
    with pytest.raises(ConfigError, match="torchrun"):
        resolve_recipe("compact", 256, "cuda", 300, 700, processes=2)


def _batches(n_images: int, batch_size: int) -> SyntheticBatches:
    images = np.random.default_rng(0).integers(0, 256, (n_images, 32, 32, 3), np.uint8)
    synth = AnomalySynthesizer(32, 3, anomaly_prob=1.0)
    return SyntheticBatches(images, [f"{i}" for i in range(n_images)], synth, batch_size, seed=5, shuffle=True)


def test_split_ranks_share_every_batch_with_one_process_anomalies():
    base = _batches(22, 8)  # batches of 8, 8, 6
    shares = [shard(base, Ranks(r, 2, torch.device("cpu")), split=True) for r in range(2)]
    for epoch in (0, 3):
        whole = base._batches(epoch)
        parts = [s._batches(epoch) for s in shares]
        assert len(shares[0]) == len(shares[1]) == len(base) == 3  # the steps of one process
        for b, batch in enumerate(whole):
            assert sorted(parts[0][b] + parts[1][b]) == sorted(batch)  # this batch, split
            assert not set(parts[0][b]) & set(parts[1][b])
    # Each image gets the anomaly one process would draw (not seed + rank, as torchrun's ranks do).
    i = shares[1]._batches(0)[0][0]
    assert np.array_equal(shares[1]._sample(0, i)[0], base._sample(0, i)[0])
    unsplit = shard(base, Ranks(1, 2, torch.device("cpu")))
    assert not np.array_equal(unsplit._sample(0, i)[0], base._sample(0, i)[0])


def test_a_batch_smaller_than_the_ranks_leaves_no_rank_empty():
    base = _batches(10, 8)  # batches of 8 and 2: the second has no image for ranks 2 and 3
    shares = [shard(base, Ranks(r, 4, torch.device("cpu")), split=True) for r in range(4)]
    assert [len(s._batches(0)[1]) for s in shares] == [1, 1, 1, 1]
    assert shares[3]._batches(0)[1] == [base._batches(0)[1][0]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("proc_data"), size=32, n_train=20, n_test_good=4,
                              n_test_per_defect=3)


def _run(args, env_extra=None, **kw):
    env = {k: v for k, v in os.environ.items() if k != processes.ENV_DEFAULT}
    env.update({"OMP_NUM_THREADS": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", "dad_edge", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


@needs_gloo
def test_train_in_two_processes_end_to_end(data, tmp_path):
    out = tmp_path / "run"
    r = _run(["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--epochs", "2",
              "--batch-size", "8", "--processes", "2"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("epoch 2:") == 1  # rank 0 alone reports
    _, meta = read_tensors(out / "model.safetensors")
    training = meta["training"]
    assert training["processes"] == 2 and training["recipe"]["processes"] == 2
    # The steps of one process: 18 training images in batches of 8 -> 3 per epoch, split over 2 ranks.
    assert training["steps"] == 2 * 3
    # --resume goes on in 2 processes from rank 0's state.
    r = _run(["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--epochs", "3",
              "--batch-size", "8", "--processes", "2", "--resume"])
    assert r.returncode == 0, r.stderr
    _, meta = read_tensors(out / "train_state.safetensors")
    assert meta["train_state"]["epoch"] == 3 and meta["train_state"]["steps"] == 9
    r = _run(["eval", str(out / "model.safetensors"), "--data", str(data), "--quiet"])
    assert r.returncode == 0, r.stderr


@needs_gloo
def test_auto_on_a_two_core_cpu_is_two_processes_and_the_default_one(data, tmp_path):
    if processes.usable_cores() < 2:
        pytest.skip("needs 2 usable cores for auto to be 2 processes")
    for flag, expected in ((["--processes", "auto"], 2), ([], 1)):
        out = tmp_path / f"run{expected}"
        r = _run(["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--epochs", "1",
                  "--batch-size", "8", *flag])
        assert r.returncode == 0, r.stderr
        assert read_tensors(out / "model.safetensors")[1]["training"]["processes"] == expected


@needs_gloo
def test_a_rank_error_comes_back_once_without_a_traceback(data, tmp_path):
    # --resume on a fresh folder fails inside the ranks (Trainer.load_state), not in the launcher.
    r = _run(["train", "--data", str(data), "--out", str(tmp_path / "new"), "--preset", "tiny", "--epochs", "1",
              "--batch-size", "8", "--processes", "2", "--resume"])
    assert r.returncode == 2
    assert r.stderr.count("--resume: no ") == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_bad_process_count_is_refused_before_any_process_starts(data, tmp_path):
    r = _run(["train", "--data", str(data), "--out", str(tmp_path / "x"), "--preset", "tiny", "--epochs", "1",
              "--batch-size", "8", "--processes", "3"])
    assert r.returncode == 2 and "divide the batch size (8)" in r.stderr and "Traceback" not in r.stderr
    r = _run(["train", "--data", str(data), "--out", str(tmp_path / "x"), "--epochs", "1", "--processes", "many"])
    assert r.returncode == 2 and "--processes many: choose auto" in r.stderr


def _children(pid: int):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@needs_gloo
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_killing_the_launcher_leaves_no_rank_running(data, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != processes.ENV_DEFAULT}
    env["OMP_NUM_THREADS"] = "1"
    in_tmp = set(Path(tempfile.gettempdir()).glob("dad-edge-rank*"))
    launcher = subprocess.Popen([sys.executable, "-m", "dad_edge", "train", "--data", str(data), "--out",
                                 str(tmp_path / "run"), "--preset", "tiny", "--epochs", "1000", "--batch-size", "8",
                                 "--processes", "2", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        ranks = []
        while time.time() < deadline and not (tmp_path / "run" / "train_state.safetensors").exists():
            ranks = _children(launcher.pid) or ranks
            time.sleep(0.2)
        ranks = _children(launcher.pid) or ranks
        assert len(ranks) == 2 and (tmp_path / "run" / "train_state.safetensors").exists()
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in ranks):
            time.sleep(0.2)
        assert not any(_alive(p) for p in ranks)
        # The killed launcher's per-rank error files stay in the run's folder, named as stale temporary
        # files, and the next run there removes them (nothing is left in the system's temp folder).
        left = sorted(p.name for p in (tmp_path / "run").glob(f".rank*-error.{launcher.pid}.*.tmp"))
        assert [n.split("-")[0] for n in left] == [".rank0", ".rank1"]
        assert set(Path(tempfile.gettempdir()).glob("dad-edge-rank*")) <= in_tmp  # where they used to go
        removed = remove_stale_temps(tmp_path / "run")
        assert sorted(p.name for p in removed) == left
    finally:
        if launcher.poll() is None:
            launcher.kill()

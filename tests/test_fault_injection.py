"""`dad-edge train` under faults (issue #17, part 1): SIGKILL inside checkpoint writes and at a
random moment, then --resume, ends bit-exact with an uninterrupted run, loses no finished epoch and
leaves no unreadable file; writes that fail (a file-size limit, a read-only folder) give a one-line
error, exit code 2, and the previous checkpoint as it was. The longer version, with many more
kills, is benchmarks/fault_injection.py."""
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time

import pytest

from dad_edge.data.demo import build_demo_dataset
from dad_edge.training.train import TrainOptions, train
from fault_support import (MODEL, STATE, TRAIN_KWARGS, check_folder, launch, sigkill, state_epoch,
                           wait_for_temp, weight_differences)

EPOCHS = 3
TIMEOUT_S = 300  # one tiny run takes seconds; this only keeps a hung child from hanging the suite


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=1,
                              n_test_per_defect=1)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run (in this process: the same options and one torch thread, as the children)."""
    out = tmp_path_factory.mktemp("reference")
    train(TrainOptions(data=str(data), out=str(out), epochs=EPOCHS, **TRAIN_KWARGS))
    return out


@pytest.fixture(scope="module")
def one_epoch(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_epoch")
    train(TrainOptions(data=str(data), out=str(out), epochs=1, **TRAIN_KWARGS))
    return out


def _resumed_after(log_text: str):
    """The epochs each resumed run said it went on after ("resumed ... after epoch K")."""
    return [int(k) for k in re.findall(r"^resumed .* after epoch (\d+)", log_text, re.M)]


def test_sigkill_in_writes_and_at_random_then_resume_ends_bit_exact(data, reference, tmp_path, capsys):
    out, log = tmp_path / "run", tmp_path / "train.log"
    rng = random.Random(17)
    # Inside the first model write, inside a training-state write, then at a random moment of training.
    plan = [("write", MODEL), ("write", STATE), ("random", None)]
    recorded = []  # the state's epoch before each run: what a resume must go on from
    for mode, target in plan:
        before = state_epoch(out)
        recorded.append(before)
        proc = launch(data, out, EPOCHS, write_delay_s=0.5 if mode == "write" else 0.0, log=log)
        if mode == "write":
            if target == STATE:  # not the run's first state write: one epoch of this run finishes first
                end = time.monotonic() + TIMEOUT_S
                while state_epoch(out) == before:
                    assert proc.poll() is None and time.monotonic() < end, "the run wrote no training state"
                    time.sleep(0.01)
            assert wait_for_temp(proc, out, target, TIMEOUT_S) is not None, f"the run ended before writing {target}"
        else:  # once the run has resumed (its first line), somewhere in the next second of training
            end = time.monotonic() + TIMEOUT_S
            while len(_resumed_after(log.read_text())) < sum(e > 0 for e in recorded) and proc.poll() is None:
                assert time.monotonic() < end
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
        assert sigkill(proc), f"{mode} {target}: the run had already ended"
        leftovers = check_folder(out)  # every file but a killed write's temporary one loads
        after = state_epoch(out)
        assert after >= before, f"kill in {mode} {target}: the state went back from epoch {before} to {after}"
        if mode == "write":
            assert [p.name.split(".")[1] for p in leftovers if p.parent == out] == [target.split(".")[0]], \
                "the kill did not land inside the write"
            if target == STATE:  # the epoch finished in this run is kept, the one being written is not
                assert after == before + 1

    # The last resume in this process (a child costs seconds of imports; the code path is the same).
    recorded.append(state_epoch(out))
    train(TrainOptions(data=str(data), out=str(out), epochs=EPOCHS, resume=True, **{**TRAIN_KWARGS, "progress": True}))
    assert check_folder(out) == []  # the killed writers' temporary files are gone
    # Each resumed run went on from the last finished epoch, never an earlier one.
    assert _resumed_after(log.read_text() + capsys.readouterr().out) == [e for e in recorded if e > 0]
    assert state_epoch(out) == EPOCHS
    assert weight_differences(reference, out) == []


def _error_line(err: bytes) -> str:
    text = err.decode()
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("dad-edge train:")]
    assert len(lines) == 1, text
    return lines[0]


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_file_size_limit_is_a_one_line_error_and_keeps_the_checkpoint(data, one_epoch, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    before = _files(out)
    limit = 64 * 1024  # below the tiny model's 260 kB: the first write of epoch 2 fails

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = launch(data, out, 2, preexec_fn=small_files)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 2, err.decode()
    line = _error_line(err)
    assert f"cannot write {out / MODEL}" in line and "File too large" in line and "--resume" in line
    assert _files(out) == before  # the previous checkpoint intact, no temporary file left
    assert state_epoch(out) == 1


def _without_root_override():
    """Argv prefix under which file permissions apply: as root, drop the capabilities that override them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only folder would not stop root's writes")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_read_only_folder_is_a_one_line_error_and_keeps_the_checkpoint(data, one_epoch, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    before = _files(out)
    prefix = _without_root_override()
    os.chmod(out, 0o555)
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(out / 'probe')!r}, 'w')"],
                               capture_output=True)
        if probe.returncode == 0:
            pytest.skip("chmod 555 does not stop writes here (root, or a filesystem without permissions)")
        proc = launch(data, out, 2, prefix=prefix)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        os.chmod(out, 0o755)
    assert proc.returncode == 2, err.decode()
    line = _error_line(err)
    assert f"cannot write {out / MODEL}" in line and "Permission denied" in line and f"make {out} writable" in line
    assert _files(out) == before

import json
import os
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dad_edge.artifacts import checkpoint as ckpt
from dad_edge.artifacts.atomic import atomic_path, is_temp_file, write_bytes_atomic
from dad_edge.model.config import preset
from dad_edge.errors import CheckpointError
from dad_edge.artifacts.metadata import Thresholds, build_metadata
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.version import FORMAT_VERSION
from deploy_support import engine_meta
from fs_watch import created_names


def _model(seed=0, **changes):
    torch.manual_seed(seed)
    m = DiffusionAD(preset("tiny", **changes))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial weights, BN statistics included
        for t in m.state_dict().values():
            if t.is_floating_point() and t.data_ptr() != m.noise.data_ptr():
                t.add_(torch.rand(t.shape, generator=g) * 0.1)
    return m.eval()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


@pytest.fixture
def saved(tmp_path):
    m = _model(noise_seed=5)
    meta = build_metadata(m.cfg, thresholds=Thresholds(0.25, 0.75, "test fixture"), extra_section={"a": [1, 2]})
    path = tmp_path / "model.safetensors"
    ckpt.save_model(path, m, meta)
    return path, m, meta


def test_round_trip_is_bit_exact(saved, tmp_path):
    path, m, meta = saved
    loaded, meta2 = ckpt.load_model(path)
    assert not loaded.training
    assert loaded.cfg == m.cfg and loaded.cfg.noise_seed == 5
    sd, sd2 = m.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert sd[k].dtype == sd2[k].dtype and torch.equal(sd[k], sd2[k]), k
    assert meta2 == json.loads(json.dumps(meta))
    assert meta2["thresholds"] == {"image": 0.25, "pixel": 0.75, "source": "test fixture"}
    assert meta2["extra_section"] == {"a": [1, 2]}
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = m(x), loaded(x)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)
    assert _leftovers(tmp_path) == []


def test_read_tensors_returns_everything(saved):
    path, m, meta = saved
    tensors, meta2 = ckpt.read_tensors(path)
    assert set(tensors) == set(m.state_dict())
    assert meta2["kind"] == "checkpoint" and meta2["format_version"] == FORMAT_VERSION


def test_written_file_is_readable_like_any_new_file(tmp_path):
    """mkstemp creates 0600 files: the atomic rename must not make models owner-only."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "model.safetensors"
        ckpt.save_model(path, _model(), build_metadata(preset("tiny")))
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        # Replacing a file keeps its permissions.
        os.chmod(path, 0o640)
        ckpt.save_model(path, _model(1), build_metadata(preset("tiny")))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    write_bytes_atomic(path, b"first")
    assert path.read_bytes() == b"first"
    write_bytes_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["f.bin"]


def test_failure_inside_atomic_path_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    write_bytes_atomic(path, b"old contents")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp != path
            tmp.write_bytes(b"half of the new")
            assert path.read_bytes() == b"old contents"  # nothing visible yet
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_failure_inside_atomic_path_without_old_file_leaves_nothing(tmp_path):
    path = tmp_path / "model.safetensors"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_the_previous_checkpoint(saved):
    path, m, meta = saved
    before = path.read_bytes()
    with pytest.raises(Exception):
        ckpt.save_tensors(path, {"a": torch.zeros(2), "b": "not a tensor"}, meta)
    assert path.read_bytes() == before
    ckpt.load_model(path)
    assert _leftovers(path.parent) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(CheckpointError, match="does not exist") as e:
        ckpt.load_model(path)
    assert str(path) in str(e.value)


def test_truncated_file(saved):
    path, _, _ = saved
    data = path.read_bytes()
    cut = path.with_name("cut.safetensors")
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        ckpt.load_model(cut)
    assert str(cut) in str(e.value)
    # Cut inside the header, too.
    cut.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        ckpt.load_model(cut)
    cut.write_bytes(b"")
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        ckpt.load_model(cut)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="not a dad_edge model") as e:
        ckpt.load_model(path)
    assert str(path) in str(e.value)
    # Foreign metadata, without ours.
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a dad_edge model"):
        ckpt.load_model(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError) as e:
        ckpt.load_model(path)
    assert str(path) in str(e.value)
    assert "Traceback" not in str(e.value)


def test_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="model.pt"):
        ckpt.load_model(path)


def _with_meta(tmp_path, meta_text, name="m.safetensors"):
    path = tmp_path / name
    save_file(_model().state_dict(), str(path), metadata={ckpt.META_KEY: meta_text})
    return path


def test_newer_format_version_asks_to_upgrade(tmp_path):
    meta = build_metadata(preset("tiny"))
    meta["format_version"] = 99
    path = _with_meta(tmp_path, json.dumps(meta))
    with pytest.raises(CheckpointError, match="upgrade") as e:
        ckpt.load_model(path)
    assert str(path) in str(e.value) and "99" in str(e.value)


def test_bad_metadata_json(tmp_path):
    path = _with_meta(tmp_path, "{not json")
    with pytest.raises(CheckpointError, match="not valid JSON") as e:
        ckpt.load_model(path)
    assert str(path) in str(e.value)


def test_metadata_with_bad_model_config(tmp_path):
    meta = build_metadata(preset("tiny"))
    meta["model"]["top_k"] = 0
    path = _with_meta(tmp_path, json.dumps(meta))
    with pytest.raises(CheckpointError, match="top_k") as e:
        ckpt.load_model(path)
    assert str(path) in str(e.value)


def test_metadata_with_bad_threshold(tmp_path):
    meta = build_metadata(preset("tiny"))
    meta["thresholds"]["image"] = 3.0
    path = _with_meta(tmp_path, json.dumps(meta))
    with pytest.raises(CheckpointError, match="threshold image"):
        ckpt.load_model(path)


def test_a_save_creates_only_files_a_later_run_can_clean_up(tmp_path):
    # safetensors' own save_file writes through a temporary file of its own (".tmpXXXXXX", no PID):
    # a SIGKILL inside it left that file in the run folder for good (found by the fault-injection
    # test). Every name a save creates must be the target or a temporary file remove_stale_temps knows.
    path = tmp_path / "model.safetensors"
    names = created_names(tmp_path, lambda: ckpt.save_model(path, _model(), build_metadata(preset("tiny"))))
    assert names and all(n == path.name or is_temp_file(n) for n in names), names
    assert _leftovers(tmp_path) == []


def test_weights_that_do_not_match_the_config(tmp_path):
    other = DiffusionAD(preset("tiny").replace(unet=preset("tiny").unet.__class__(
        base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), num_heads=2,
        time_embed_dim=16, groups=4)))
    path = tmp_path / "mismatch.safetensors"
    ckpt.save_tensors(path, other.state_dict(), build_metadata(preset("tiny")))
    with pytest.raises(CheckpointError, match="do not match") as e:
        ckpt.load_model(path)
    assert str(path) in str(e.value) and "wrong shape" in str(e.value)
    # A missing tensor.
    sd = _model().state_dict()
    del sd["noise"]
    ckpt.save_tensors(path, sd, build_metadata(preset("tiny")))
    with pytest.raises(CheckpointError, match="missing.*noise"):
        ckpt.load_model(path)
    # An extra tensor.
    sd = _model().state_dict()
    sd["bogus.weight"] = torch.zeros(1)
    ckpt.save_tensors(path, sd, build_metadata(preset("tiny")))
    with pytest.raises(CheckpointError, match="unexpected.*bogus"):
        ckpt.load_model(path)


def test_other_artifact_kind_is_not_a_checkpoint(tmp_path):
    meta = {**engine_meta(), "kind": "onnx"}  # valid ONNX metadata, in a .safetensors file
    del meta["tensorrt"]
    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, _model(), meta)
    with pytest.raises(CheckpointError, match="onnx"):
        ckpt.load_model(path)

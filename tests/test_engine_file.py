"""The engine container: header round trip, raw engine + sidecar, damaged files."""
import json
import struct

import pytest

from dad_edge.artifacts import metadata as md
from dad_edge.model.config import preset
from dad_edge.errors import CheckpointError
from dad_edge.artifacts.engine_file import (MAGIC, read_engine_file, rewrite_engine_metadata, sidecar_path,
                                         write_engine_file)
from dad_edge.export.metadata_io import read_metadata, write_metadata
from deploy_support import engine_meta

PLAN = bytes(range(256)) * 40  # stands in for a serialized engine


def test_round_trip_and_documented_layout(tmp_path):
    path = tmp_path / "e.plan"
    write_engine_file(path, PLAN, engine_meta())
    data = path.read_bytes()
    magic, length = struct.unpack("<4sI", data[:8])
    assert magic == MAGIC == b"DADE"
    header = json.loads(data[8:8 + length])
    assert header["kind"] == "tensorrt" and header["tensorrt"]["engine_bytes"] == len(PLAN)
    assert data[8 + length:] == PLAN
    meta, plan = read_engine_file(path)
    assert plan == PLAN and meta["tensorrt"]["compute_capability"] == "8.7"
    assert read_metadata(path) == meta


def test_raw_engine_with_sidecar(tmp_path):
    path = tmp_path / "raw.engine"
    path.write_bytes(PLAN)
    with pytest.raises(CheckpointError, match="no dad_edge header and no sidecar raw.json"):
        read_engine_file(path)
    sidecar_path(path).write_text(md.dumps(engine_meta()))
    meta, plan = read_engine_file(path)
    assert plan == PLAN and meta["kind"] == "tensorrt"
    rewrite_engine_metadata(path, {**meta, "thresholds": {"image": 0.3, "pixel": 0.7, "source": "t"}})
    assert path.read_bytes() == PLAN  # the engine itself is untouched
    assert md.thresholds(read_engine_file(path)[0]).image == 0.3


def test_rewrite_keeps_the_engine(tmp_path):
    path = tmp_path / "e.plan"
    write_engine_file(path, PLAN, engine_meta())
    meta = read_metadata(path)
    write_metadata(path, {**meta, "thresholds": {"image": 0.25, "pixel": 0.5, "source": "t"}})
    meta2, plan = read_engine_file(path)
    assert plan == PLAN and md.thresholds(meta2).pixel == 0.5


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:6], "no dad_edge header"),  # too short for the prefix: taken as a raw engine without sidecar
    (lambda d: d[:20], "ends inside its header"),
    (lambda d: d[:-100], "cut short"),
    (lambda d: MAGIC + struct.pack("<I", 0) + d[8:], "impossible"),
    (lambda d: MAGIC + struct.pack("<I", 2 ** 31) + d[8:], "impossible"),
])
def test_damaged_files(tmp_path, damage, message):
    path = tmp_path / "e.plan"
    write_engine_file(path, PLAN, engine_meta())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        read_engine_file(path)


def test_header_must_describe_an_engine(tmp_path):
    with pytest.raises(CheckpointError, match="'tensorrt' section"):
        write_engine_file(tmp_path / "a.plan", PLAN, {**engine_meta(), "tensorrt": {"version": "10.3"}})
    onnx_meta = md.build_metadata(preset("tiny"), kind="onnx", export=engine_meta()["export"])
    path = tmp_path / "b.plan"
    path.write_bytes(PLAN)
    sidecar_path(path).write_text(md.dumps(onnx_meta))
    with pytest.raises(CheckpointError, match="expected 'tensorrt'"):
        read_engine_file(path)
    newer = {**engine_meta(), "format_version": 99}
    sidecar_path(path).write_text(json.dumps(newer))
    with pytest.raises(CheckpointError, match="upgrade dad_edge"):
        read_engine_file(path)


@pytest.mark.parametrize("change", [
    {"export": None},
    {"export": {"opset": 17, "batch": 0}},
    {"export_batch": "many"},
    {"export_precision": "fp8"},
    {"export_opset": "17"},
])
def test_exported_metadata_needs_a_valid_export_section(tmp_path, change):
    """The engine builder reads the ONNX file's 'export' section; a missing or malformed one is
    refused at load with what to do, for ONNX files and engines alike."""
    meta = engine_meta()
    for key, value in change.items():
        if key == "export":
            meta = {k: v for k, v in meta.items() if k != "export"} if value is None else {**meta, "export": value}
        else:
            meta = {**meta, "export": {**meta["export"], key.split("_", 1)[1]: value}}
    for kind in ("onnx", "tensorrt"):
        with pytest.raises(CheckpointError, match="'export' section.*re-export"):
            md.validate_metadata({**meta, "kind": kind}, "m.onnx")
    assert md.validate_metadata(engine_meta(), "ok.plan")["export"]["batch"] == "dynamic"

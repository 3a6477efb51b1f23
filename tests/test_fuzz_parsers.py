"""Fuzzing of every parser dad_edge owns, with Hypothesis (issue #17, part 2).

Property: any byte string or JSON value gives a valid object or our own error (dad_edge/errors.py)
whose message names the file or value; never another exception, a hang, or memory that follows
a length field. Each parser is fed both unstructured input and mutations of a valid one, which
reach the checks behind the first. The longer run is benchmarks/fuzz_parsers.py
(DAD_EDGE_FUZZ_EXAMPLES=N raises the number of examples here).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import math
import os
import shutil
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import read_tensors, save_tensors
from dad_edge.artifacts.engine_file import MAGIC, PREFIX, read_engine_file, write_engine_file
from dad_edge.artifacts.json_lines import JsonLinesWriter, read_json_lines
from dad_edge.cli import build_parser
from dad_edge.errors import DadEdgeError
from dad_edge.model.config import PRESETS, ModelConfig, preset
from dad_edge.stream.capture import FrameSource, parse_source
from deploy_support import engine_meta

EXAMPLES = int(os.environ.get("DAD_EDGE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize="DAD_EDGE_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORK = Path(tempfile.mkdtemp(prefix="dad_edge_fuzz_"))  # one file per parser, rewritten by each example
atexit.register(shutil.rmtree, WORK, ignore_errors=True)

# JSON values: every type, nested; keys and strings that look like ours now and then.
KEYS = st.sampled_from(["format", "format_version", "kind", "model", "thresholds", "preprocessing", "export",
                        "tensorrt", "image_size", "channels", "unet", "seg", "dit", "recon", "backbone", "method",
                        "groups", "num_heads", "mlp_ratio", "engine_bytes", "batch", "precision"]) | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-3, 2 ** 8)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["dad_edge", "checkpoint", "onnx", "tensorrt", "unet", "dit", "recon", "fp16", "dynamic"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=6),
                    max_leaves=25)


def _is_ours(exc: BaseException, *names: str) -> None:
    """The error is ours and its message names one of `names` (a file, a key, a value)."""
    assert isinstance(exc, DadEdgeError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert any(n in text for n in names), f"{text!r} names none of {names}"


def _mutate(value, path, new):
    """A copy of nested dict/list `value` with the item at `path` replaced by `new` (or deleted: new is ...)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    if rest:
        copy[head] = _mutate(copy[head], rest, new)
    elif new is ...:
        del copy[head]
    else:
        copy[head] = new
    return copy


def _paths(value, prefix=()):
    """Every key path of a nested dict/list."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _mutations(valid):
    """Strategy: `valid` with one item replaced by any JSON value, or deleted."""
    paths = [p for p in _paths(valid) if p]
    return st.tuples(st.sampled_from(paths), JSON | st.just(...)).map(lambda pn: _mutate(valid, *pn))


# -- the model config ------------------------------------------------------------------------

VALID_CONFIGS = [cfg.to_dict() for cfg in PRESETS.values()] + [preset("tiny", method="recon").to_dict()]


@FUZZ
@given(st.one_of(JSON, *[_mutations(c) for c in VALID_CONFIGS]))
def test_model_config_from_any_json(value):
    try:
        cfg = ModelConfig.from_dict(value)
    except Exception as exc:
        _is_ours(exc, "config", "model", "=", "must", "backbone", "method")
        return
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg  # a config that loads round-trips


# -- artifact metadata -----------------------------------------------------------------------

VALID_META = [md.build_metadata(preset("tiny")), engine_meta()]


@FUZZ
@given(st.one_of(JSON, *[_mutations(m) for m in VALID_META]))
def test_metadata_from_any_json(value):
    where = "fuzz.safetensors"
    try:
        meta = md.loads(json.dumps(value), where)
    except Exception as exc:
        _is_ours(exc, where)
        return
    assert md.validate_metadata(meta, where) == meta


@FUZZ
@given(st.text(max_size=200) | st.integers(1, 5000).map(lambda n: "[" * n + "]" * n)
       | st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n))
def test_metadata_from_any_text(text):
    try:
        md.loads(text, "fuzz.json")
    except Exception as exc:
        _is_ours(exc, "fuzz.json")


# -- checkpoint (safetensors) ----------------------------------------------------------------

def _valid_checkpoint() -> bytes:
    import torch

    path = WORK / "valid.safetensors"
    save_tensors(path, {"w": torch.arange(6, dtype=torch.float32)}, md.build_metadata(preset("tiny")))
    return path.read_bytes()


VALID_CKPT = _valid_checkpoint()


def _byte_mutations(valid: bytes):
    """`valid` cut short, with bytes overwritten, or with its 8-byte length field replaced."""
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    poke = st.tuples(st.integers(0, len(valid) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda ib: valid[:ib[0]] + ib[1] + valid[ib[0] + len(ib[1]):])
    length = st.integers(0, 2 ** 64 - 1).map(lambda n: struct.pack("<Q", n) + valid[8:])
    return cut | poke | length


@FUZZ
@given(st.binary(max_size=300) | _byte_mutations(VALID_CKPT))
def test_checkpoint_from_any_bytes(data):
    path = WORK / "fuzz.safetensors"
    path.write_bytes(data)
    try:
        read_tensors(path)
    except Exception as exc:
        _is_ours(exc, str(path))


# -- ONNX metadata ---------------------------------------------------------------------------

def _onnx_bytes(meta_text: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    helper.set_model_props(model, {md.META_KEY: meta_text})
    return model.SerializeToString()


ONNX_META = md.derive_metadata(md.build_metadata(preset("tiny")), "onnx", export={
    "opset": 17, "batch": "dynamic", "precision": "fp32", "input": {"name": "image"}, "outputs": ["score"]})


@FUZZ
@given(st.binary(max_size=200) | _mutations(ONNX_META).map(lambda m: _onnx_bytes(json.dumps(m)))
       | st.text(max_size=50).map(_onnx_bytes))
def test_onnx_metadata_from_any_bytes(data):
    from dad_edge.export.metadata_io import read_metadata

    path = WORK / "fuzz.onnx"
    path.write_bytes(data)
    try:
        meta = read_metadata(path)
    except Exception as exc:
        _is_ours(exc, str(path))
        return
    assert meta["kind"] == "onnx"


# -- the engine container --------------------------------------------------------------------

def _valid_engine() -> bytes:
    path = WORK / "valid.plan"
    write_engine_file(path, b"serialized-engine" * 4, engine_meta())
    return path.read_bytes()


VALID_ENGINE = _valid_engine()


@FUZZ
@given(st.binary(max_size=300) | _byte_mutations(VALID_ENGINE)
       | st.tuples(st.integers(0, 2 ** 32 - 1), st.binary(max_size=64)).map(
           lambda lb: PREFIX.pack(MAGIC, lb[0]) + lb[1]))
def test_engine_header_from_any_bytes(data):
    path = WORK / "fuzz.plan"
    path.write_bytes(data)
    try:
        meta, plan = read_engine_file(path)
    except Exception as exc:
        _is_ours(exc, str(path))
        return
    assert meta["kind"] == "tensorrt" and plan


@pytest.mark.parametrize("length", [2 ** 24, 2 ** 32 - 1])
def test_engine_header_length_is_checked_before_reading(length, tmp_path):
    """A header length field of gigabytes in a tiny file: refused without allocating it."""
    path = tmp_path / "huge.plan"
    path.write_bytes(PREFIX.pack(MAGIC, length) + b"{}")
    tracemalloc.start()
    try:
        with pytest.raises(DadEdgeError, match="huge.plan"):
            read_engine_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated for a {path.stat().st_size}-byte file"


# -- events / results.jsonl ------------------------------------------------------------------

RECORDS = st.lists(st.dictionaries(st.text(max_size=8), JSON, max_size=5), max_size=6)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here


@FUZZ
@given(RECORDS, st.data())
def test_json_lines_round_trip_and_any_cut(records, data):
    path = WORK / "events.jsonl"
    path.unlink(missing_ok=True)
    w = JsonLinesWriter(path)
    for r in records:
        w.write(r)
    w.close(sync=False)  # fsync is the disk's business, not the format's: skipped for speed
    read = read_json_lines(path)
    assert _same(read.records, records) and not read.cut_tail
    blob = path.read_bytes()
    cut = data.draw(st.integers(0, len(blob)))
    path.write_bytes(blob[:cut])  # a writer killed at byte `cut`
    read = read_json_lines(path)
    whole = blob[:cut].count(b"\n")
    assert _same(read.records, records[:len(read.records)]) and len(read.records) in (whole, whole + 1)
    # Appending after the kill: the cut fragment goes, the new record is whole.
    w = JsonLinesWriter(path)
    w.write({"after": 1})
    w.close(sync=False)
    again = read_json_lines(path)
    assert _same(again.records, read.records + [{"after": 1}]) and not again.cut_tail


@FUZZ
@given(st.binary(max_size=300))
def test_json_lines_reader_on_any_bytes(data):
    path = WORK / "any.jsonl"
    path.write_bytes(data)
    try:
        read = read_json_lines(path)
    except Exception as exc:
        _is_ours(exc, str(path))
        return
    assert all(isinstance(r, dict) for r in read.records)


# -- stream sources --------------------------------------------------------------------------

SOURCE_TEXT = st.one_of(
    st.text(max_size=30),
    st.builds(lambda s, t: f"{s}://{t}", st.sampled_from(["csi", "rtsp", "http", "https", "udp", "ftp", "CSI", "x"]),
              st.text(max_size=30)),
    st.builds(lambda n, q: f"csi://{n}?{q}", st.text("0123456789٣", max_size=4),
              st.lists(st.tuples(st.sampled_from(["width", "height", "fps", "flip", "x"]), st.text(max_size=6)),
                       max_size=4).map(lambda kv: "&".join(f"{k}={v}" for k, v in kv))),
    st.builds(lambda a, b: f"{a}*{b}", st.text(max_size=8), st.sampled_from(["", ".png", "/*.jpg", "[a-"])),
    st.integers(-5, 10 ** 30).map(str),
)


@pytest.fixture(scope="module")
def empty_cwd():
    """Globs and relative names resolve in an empty folder, never in the repository."""
    old = os.getcwd()
    folder = WORK / "cwd"
    folder.mkdir(exist_ok=True)
    os.chdir(folder)
    yield folder
    os.chdir(old)


@FUZZ
@given(SOURCE_TEXT)
def test_source_spec_from_any_string(empty_cwd, spec):
    # No absolute globs or parent folders: a "/**" would walk the whole disk, not fuzz a parser.
    if spec.startswith(("/", "~")) or ".." in spec:
        spec = "./" + spec.replace("..", "._")
    try:
        source = parse_source(spec)
    except Exception as exc:
        _is_ours(exc, spec.split("@")[-1][-10:], "stream source", "camera", "scheme", "URL", "GStreamer", "csi")
        return
    assert isinstance(source, FrameSource)
    assert "@" not in source.name.split("//", 1)[-1].split("/", 1)[0] or "***@" in source.name


# -- CLI numbers -----------------------------------------------------------------------------

PARSER = build_parser()
NUMBER_TEXT = st.one_of(st.text(max_size=12), st.floats().map(repr), st.integers().map(str),
                        st.sampled_from(["nan", "inf", "-inf", "NaN", "1e309", "-0", "0x10", "1_000", " 7 ", "٣"]))
TRAIN_NUMBERS = ["--epochs", "--minutes", "--batch-size", "--lr-unet", "--lr-seg", "--warmup", "--ema",
                 "--snapshot-minutes", "--seed", "--val-fraction", "--anomaly-prob", "--band-prob",
                 "--patch-prob", "--line-prob",
                 "--threshold-quantile", "--workers", "--image-size", "--smoothing-sigma", "--recon-t"]
STREAM_NUMBERS = ["--batch", "--max-frames", "--queue", "--alarm-interval", "--log-every", "--threshold",
                  "--pixel-threshold", "--sensitivity"]


def _parse(argv):
    """Parsed args, or None when argparse refuses the value (its usage error, exit code 2)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return PARSER.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2
        return None


@FUZZ
@given(st.sampled_from(TRAIN_NUMBERS), NUMBER_TEXT)
def test_train_numbers(option, text):
    from dad_edge.cli.config import resolve_config
    from dad_edge.cli.train import train_options

    args = _parse(["train", "--data", "d", "--out", str(WORK / "out"), "--epochs", "1", option, text])
    if args is None:
        return
    try:
        resolve_config(args)  # what cmd_train does first: options not given take their defaults
        train_options(args).validate()
    except Exception as exc:
        _is_ours(exc, "=", "--", "must")
        return
    values = vars(args)
    assert all(math.isfinite(v) for v in values.values() if isinstance(v, float)), (option, text)


@FUZZ
@given(st.sampled_from(STREAM_NUMBERS), NUMBER_TEXT)
def test_stream_numbers(option, text):
    args = _parse(["stream", "m.onnx", "--source", "0", option, text])
    if args is None:
        return
    for v in vars(args).values():
        if isinstance(v, float):
            assert math.isfinite(v), (option, text)
        if isinstance(v, int) and not isinstance(v, bool) and option in ("--batch", "--max-frames", "--queue"):
            assert v >= 1


@FUZZ
@given(st.dictionaries(st.sampled_from(["epochs", "minutes", "lr-unet", "lr_seg", "seed", "preset", "select", "ema",
                                        "warmup", "batch-size", "quiet", "data", "nope"]) | st.text(max_size=8),
                       JSON, max_size=5) | JSON)
def test_train_config_file_from_any_json(value):
    """`train --config FILE`: any JSON in the file is an option set or a ConfigError naming the file."""
    from dad_edge.cli.config import resolve_config
    from dad_edge.cli.train import train_options

    path = WORK / "run.json"
    path.write_text(json.dumps(value))
    args = _parse(["train", "--data", "d", "--out", str(WORK / "out"), "--config", str(path)])
    try:
        resolve_config(args)
        train_options(args).validate()
    except Exception as exc:
        _is_ours(exc, str(path), "=", "--", "must", "set")


def test_fuzz_parsers_accept_what_they_wrote():
    """The valid inputs the mutations start from do load: a fuzz test that only ever saw errors tests nothing."""
    assert read_engine_file(WORK / "valid.plan")[0]["kind"] == "tensorrt"
    assert read_tensors(WORK / "valid.safetensors")[1]["kind"] == "checkpoint"
    for d in VALID_CONFIGS:
        ModelConfig.from_dict(d)
    assert isinstance(_parse(["stream", "m.onnx", "--source", "0", "--alarm-interval", "2.5"]), argparse.Namespace)


# -- what the fuzzing found (each a regression test) -------------------------------------------

@pytest.mark.parametrize("name, section, key, value", [
    ("tiny", "unet", "groups", 0),  # was ZeroDivisionError
    ("tiny-dit", "dit", "mlp_ratio", float("inf")),  # was OverflowError
    ("tiny", None, "image_size", 2 ** 20),  # was accepted: a fixed noise of terabytes at load
    ("tiny", None, "num_timesteps", 10 ** 12),  # was accepted: a schedule of terabytes at load
])
def test_model_config_values_found_by_fuzzing(name, section, key, value):
    from dad_edge.errors import ConfigError

    d = preset(name).to_dict()
    if section is None:
        d[key] = value
    else:
        d[section] = {**d[section], key: value}
    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_dict(d)


def test_deeply_nested_metadata_json_is_a_checkpoint_error():
    from dad_edge.errors import CheckpointError

    with pytest.raises(CheckpointError, match="model.onnx: metadata JSON is nested too deeply"):
        md.loads("[" * 100_000 + "]" * 100_000, "model.onnx")  # was RecursionError


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_numbers_are_refused_by_the_cli(text):
    for argv in (["train", "--data", "d", "--out", "o", "--minutes", text],
                 ["stream", "m.onnx", "--source", "0", "--alarm-interval", text]):
        assert _parse(argv) is None, argv  # was accepted: --minutes nan trained without a time limit


@pytest.mark.parametrize("content, kept", [(b'{"a": 1}\n{}', [{"a": 1}, {}]),  # a whole record, no newline
                                           (b'{"a": 1}\n{"sco', [{"a": 1}])])  # a cut one
def test_appending_keeps_what_the_reader_read(tmp_path, content, kept):
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    assert read_json_lines(path).records == kept
    w = JsonLinesWriter(path)
    w.write({"next": 2})
    w.close()
    assert read_json_lines(path).records == kept + [{"next": 2}]  # was: a whole last record dropped on append


def test_infinite_smoothing_sigma_is_a_config_error():
    from dad_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="smoothing_sigma=inf"):  # was accepted (found by the long fuzz run)
        preset("tiny", smoothing_sigma=float("inf"))

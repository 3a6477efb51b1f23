"""Export a checkpoint to one ONNX graph with its metadata inside.

The graph is DeployGraph (dad_edge/model/deploy_graph.py): input `image` float32 (B, C, S, S) pixel values
0..255, outputs `anomaly_map` (B, 1, S, S) and `score` (B,), dynamic batch. The fixed
noise, the schedule coefficients and the timestep embeddings become constants.

The TorchScript-based exporter is used at opset 17: it decomposes GroupNorm into
InstanceNormalization (no GroupNormalization op, which needs opset 21 and which
TensorRT 8.6 of JetPack 5 cannot parse), and TensorRT 8.6 parses opsets up to 17. The
torch.export-based exporter cannot go below opset 18.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import onnx
import torch

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.runtime.backends.base import INPUT_NAME, OUTPUT_NAMES
from dad_edge.artifacts.metadata import SCORE_NORMALIZATION
from dad_edge.artifacts.checkpoint import load_model
from dad_edge.errors import ConfigError
from dad_edge.model.diffusion_ad import DiffusionAD

from dad_edge.model.deploy_graph import DeployGraph

OPSETS = range(14, 21)  # 14: first with the attention ops used; 21+ would emit GroupNormalization


def export_section(opset: int, dynamic_batch: bool, batch: int, precision: str = "fp32") -> Dict[str, Any]:
    """The metadata that describes the graph's interface, shared by ONNX files and engines."""
    return {
        "opset": opset,
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "range": [0, 255],
                  "normalization": "in graph: x * scale + offset"},
        "outputs": list(OUTPUT_NAMES),
        "batch": "dynamic" if dynamic_batch else batch,
        "precision": precision,
    }


def export_onnx(model: Union[str, Path, DiffusionAD], out: Union[str, Path], *,
                meta: Optional[Dict[str, Any]] = None, opset: int = 17,
                dynamic_batch: bool = True, batch: int = 1) -> Dict[str, Any]:
    """Write `out` (.onnx) from a checkpoint path or a DiffusionAD; return its metadata.

    `meta` is the model's metadata when a module is given (default: fresh, uncalibrated).
    `batch` is the traced batch size, and the fixed one when `dynamic_batch` is False.
    """
    if opset not in OPSETS:
        raise ConfigError(f"opset={opset} must be in [{OPSETS.start}, {OPSETS.stop - 1}]")
    if batch < 1:
        raise ConfigError(f"batch={batch} must be >= 1")
    if isinstance(model, (str, Path)):
        model, meta = load_model(model, device="cpu")
    else:
        # Trace a float32 CPU copy: the caller's module keeps its device and dtype.
        model = copy.deepcopy(model).float().cpu().eval()
        meta = meta if meta is not None else md.build_metadata(model.cfg)
    cfg = model.cfg
    meta = md.derive_metadata(meta, "onnx", export=export_section(opset, dynamic_batch, batch),
                              score_normalization=SCORE_NORMALIZATION)

    example = torch.full((batch, cfg.channels, cfg.image_size, cfg.image_size), 127.0)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Expected and harmless: the legacy-exporter notice, "torch.tensor ... constants" (the
        # schedule coefficients are meant to become constants) and the unfolded reversed pad
        # list of the smoothing's replicate padding (a few integers, folded by the runtimes).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(DeployGraph(model).eval(), (example,), buf, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                          do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "dad_edge"
    onnx.helper.set_model_props(proto, {md.META_KEY: md.dumps(meta)})
    onnx.checker.check_model(proto, full_check=True)
    write_bytes_atomic(out, proto.SerializeToString())
    return meta

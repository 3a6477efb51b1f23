"""Checkpoints: one .safetensors file with the weights, the fixed noise and JSON metadata.

The metadata (see metadata.py) sits under the key "dad_edge" of the safetensors header,
so the file is self-describing and loads without pickle. Writes are atomic.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Tuple

if TYPE_CHECKING:  # torch is imported by the functions that need it: artifacts/ loads without it
    import torch

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.errors import CheckpointError
from dad_edge.artifacts.metadata import META_KEY


def save_tensors(path, tensors: Dict[str, "torch.Tensor"], meta: Dict[str, Any]) -> None:
    """Atomically write tensors + metadata (already validated) as safetensors."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # Serialised in memory and written by us (a full disk or a file-size limit: OutputError naming the
    # file): safetensors' own save_file writes through a temporary file of its own (.tmpXXXXXX, no
    # PID), which a SIGKILL inside it would leave behind where remove_stale_temps cannot know it.
    write_bytes_atomic(path, save(tensors, metadata={META_KEY: md.dumps(meta)}))


def read_metadata(path) -> Dict[str, Any]:
    """The validated metadata of a dad_edge safetensors file, without reading its tensors."""
    return _read(path, with_tensors=False)[1]


def read_tensors(path, device: str = "cpu") -> Tuple[Dict[str, "torch.Tensor"], Dict[str, Any]]:
    """Read a dad_edge safetensors file; CheckpointError for anything that is not one."""
    return _read(path, device)


def _read(path, device: str = "cpu", with_tensors: bool = True) -> Tuple[Dict[str, "torch.Tensor"], Dict[str, Any]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `dad-edge train` "
                              "or give the path of a model.safetensors")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            header = f.metadata() or {}
            if META_KEY not in header:
                raise CheckpointError(f"{path} is a safetensors file but not a dad_edge model "
                                      "(no dad_edge metadata); use a file written by `dad-edge train`")
            meta = md.loads(header[META_KEY], str(path))
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for bad headers / short files
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); it may be cut "
                              "short or not a model file: re-copy it or re-run training") from None
    return tensors, meta


def save_model(path, model, meta: Dict[str, Any]) -> None:
    save_tensors(path, model.state_dict(), meta)


def load_model(path, device: str = "cpu"):
    """-> (the config's module in eval mode: DiffusionAD or ReconAD, metadata). Checks that every
    tensor is present and fits."""
    from dad_edge.model.build import build_model

    tensors, meta = read_tensors(path, device="cpu")
    if "train_state" in meta:
        raise CheckpointError(f"{path} is a training state (for --resume), not a model; "
                              f"use {Path(path).with_name('model.safetensors')}")
    if meta["kind"] != "checkpoint":
        raise CheckpointError(f"{path} holds a {meta['kind']} artifact, not a checkpoint")
    model = build_model(md.model_config(meta))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: weights do not match its own config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); the file is damaged")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta

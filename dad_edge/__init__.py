"""dad_edge: DiffusionAD anomaly detection, from training to TensorRT on the edge.

`import dad_edge` stays light (no torch, no onnxruntime): names load on first use.
"""
from importlib import import_module

from .version import __version__

# Public name -> module that defines it, imported on first access (PEP 562).
_LAZY = {"Detector": "runtime.detector", "Result": "runtime.result"}

__all__ = ["Detector", "Result", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""dad_edge: DiffusionAD anomaly detection, from training to TensorRT on the edge.

`import dad_edge` stays light (no torch, no onnxruntime): names load on first use.

    det = dad_edge.Detector("model.onnx")                          # the runtime
    model = dad_edge.train("my_part", "runs/my_part", minutes=30)   # the Python API (dad_edge/api.py)
    dad_edge.evaluate(model, "my_part"); dad_edge.export(model, format="onnx"); dad_edge.benchmark(...)
"""
from importlib import import_module

from .version import __version__

# Public name -> module that defines it, imported on first access (PEP 562).
_LAZY = {"Detector": "runtime.detector", "Result": "runtime.result",
         "train": "api", "evaluate": "api", "benchmark": "api"}

__all__ = ["Detector", "Result", "train", "evaluate", "export", "benchmark", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    if name == "export":  # the subpackage, callable: dad_edge.export(model, format=...) is api.export
        return import_module(".export", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Export to ONNX, TensorRT, OpenVINO and Triton (installed as dad_edge.export).

`dad_edge.export(model, format="onnx", ...)` is also the Python API's export function
(dad_edge/api.py): this package and that function share the name, and importing any module
below binds the package to `dad_edge.export` whatever was there, so the package itself is made
callable and forwards the call. `dad_edge.export.onnx_export` and friends import as before.
"""
import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """dad_edge.api.export: export a model as `dad-edge export` does; returns the file written."""
        from dad_edge.api import export

        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

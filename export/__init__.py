"""Export to ONNX and TensorRT (installed as dad_edge.export)."""

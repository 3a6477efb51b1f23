"""Serving a model over the network on NVIDIA Triton Inference Server (issue #16).

    protocol.py   what goes over the wire: tensor names, dtypes, limits, the frame conversion (no torch,
                  no Triton: the remote Detector backend imports it too)
    server.py     `dad-edge serve`: a Detector behind PyTriton (a real tritonserver with its Python
                  backend), dynamic batching, a metadata model, port checks, SIGTERM
    relaunch.py   which Python runs the server: numpy 2 cannot (PyTriton 0.7), DAD_EDGE_SERVE_PYTHON can
The client side is dad_edge/runtime/backends/triton_remote_backend.py (Detector("grpc://host:8001/name")).
"""

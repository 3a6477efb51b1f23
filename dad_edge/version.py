__version__ = "0.1.0"
# Version of the artifact metadata layout (checkpoint, ONNX, engine header). A reader
# refuses anything newer than it knows.
FORMAT_VERSION = 1

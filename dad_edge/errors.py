"""Errors a user can act on. The CLI prints their message alone, without a traceback."""


class DadEdgeError(Exception):
    """Base class: the message names the file or value at fault and what to do."""


class ConfigError(DadEdgeError, ValueError):
    """An option or preset that does not exist or is out of range."""


class DataError(DadEdgeError, ValueError):
    """A data folder, image or mask that cannot be used."""


class CheckpointError(DadEdgeError, ValueError):
    """A model file that is not ours, is cut short, or is from a newer version."""


class InputError(DadEdgeError, ValueError):
    """An image handed to a Detector that it cannot run on."""


class BackendError(DadEdgeError, RuntimeError):
    """A runtime (torch, ONNX Runtime, TensorRT) that is missing or refuses the model."""


class TrainingError(DadEdgeError, RuntimeError):
    """Training diverged or cannot go on; the message says what to change."""


class OutputError(DadEdgeError, OSError):
    """A file that cannot be written (full disk, file-size limit, read-only folder); the previous
    version of the file, if any, is left as it was."""

"""The seam every classical baseline fills: fit on feature vectors, score new ones, round-trip as arrays.

A baseline's state is a few named numpy arrays plus JSON parameters, so that it is saved in
safetensors with no pickle (artifact.py) and scored by numpy alone: scikit-learn is needed to
fit IForest and OCSVM, never to score.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, Dict, Optional, Tuple

import numpy as np

from dad_edge.errors import BackendError, CheckpointError


class BaselineDetector(ABC):
    name: str  # the --method value and the artifact's "method"
    fit_module: Optional[str] = None  # the scikit-learn module fit() uses (see fit_library)

    @classmethod
    @abstractmethod
    def fit(cls, x: np.ndarray, seed: int = 0) -> "BaselineDetector":
        """Fit on (N, D) standardised features of normal images."""

    @abstractmethod
    def score(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) float64 image scores, higher = more anomalous."""

    @abstractmethod
    def arrays(self) -> Dict[str, np.ndarray]:
        """Everything score() needs, as named arrays (the safetensors payload)."""

    @abstractmethod
    def params(self) -> Dict[str, Any]:
        """JSON parameters: the fit's settings and the scalars score() needs."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], params: Dict[str, Any], dim: int,
                    where: str) -> "BaselineDetector":
        """Rebuild from a file's arrays and params; CheckpointError naming `where` if they do not fit
        each other or the feature dimension `dim`."""


def fit_library(module: str):
    """Import the scikit-learn module a fit needs; BackendError saying how to install it.

    Also called by fit.py before its clock starts: the first import of scikit-learn takes
    about 2 s on the 2-core VM, which is not fitting."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendError(f"fitting this baseline needs scikit-learn ({module}): pip install scikit-learn") from None


def need_array(arrays: Dict[str, np.ndarray], key: str, kind: str, shape: Tuple[Optional[int], ...],
               where: str) -> np.ndarray:
    """arrays[key], checked: dtype kind ('f', 'i'), rank and the sizes given (None: any); finite if float."""
    a = arrays.get(key)
    if a is None:
        raise CheckpointError(f"{where}: array {key!r} is missing; the file is damaged: fit it again "
                              "with `dad-edge baseline`")
    ok = a.dtype.kind == kind and a.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, a.shape))
    if not ok:
        want = "x".join("?" if s is None else str(s) for s in shape)
        raise CheckpointError(f"{where}: array {key!r} is {a.dtype} {a.shape}, expected kind '{kind}' of shape "
                              f"{want}; the file is damaged: fit it again with `dad-edge baseline`")
    if kind == "f" and not np.isfinite(a).all():
        raise CheckpointError(f"{where}: array {key!r} holds NaN or inf; the file is damaged: fit it again")
    return a


def need_number(params: Dict[str, Any], key: str, where: str, integer: bool = False, positive: bool = True):
    """params[key] as a JSON number (int if `integer`), > 0 if `positive`."""
    v = params.get(key)
    types = (int,) if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, types) or not np.isfinite(v) or (positive and v <= 0):
        raise CheckpointError(f"{where}: parameter {key}={v!r} must be a{' positive' if positive else ''} "
                              f"{'integer' if integer else 'number'}; the file is damaged: fit it again")
    return v

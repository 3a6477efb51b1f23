"""COPOD: copula-based outlier detection (Li et al., ICDM 2020, Algorithm 1), in numpy.

Written here rather than taken from pyod: the formula is a few lines of ranks and logs, and pyod
would add numba and matplotlib to the install for it. Per feature d, from the n training values:

    U_d(x) = (1 + #{i: X_id <= x_d}) / (n + 1)     left-tail empirical CDF
    V_d(x) = (1 + #{i: X_id >= x_d}) / (n + 1)     right-tail empirical CDF
    W_d(x) = U_d(x) if skewness_d < 0 else V_d(x)  the tail the feature's skew points to
    p_l = -sum_d log U_d,  p_r = -sum_d log V_d,  p_s = -sum_d log W_d
    O(x) = max(p_l, p_r, p_s)                      higher = more anomalous

The +1 counts x itself among the samples, as the paper's (and pyod's) ECDF over the training set
plus the scored image does for one image at a time; it keeps a value beyond every training value
finite (-log(1 / (n + 1))) and makes a score independent of the other images scored with it.
The file holds each feature's sorted training values and its skewness.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from dad_edge.baselines.base import BaselineDetector, need_array
from dad_edge.errors import CheckpointError


def skewness(x: np.ndarray) -> np.ndarray:
    """Per-column sample skewness m3 / m2^1.5 (scipy.stats.skew, biased); 0 for a constant column."""
    centred = x - x.mean(axis=0)
    m2 = (centred ** 2).mean(axis=0)
    m3 = (centred ** 3).mean(axis=0)
    return np.divide(m3, m2 ** 1.5, out=np.zeros_like(m2), where=m2 > 0)


class CopodBaseline(BaselineDetector):
    name = "copod"

    def __init__(self, sorted_train: np.ndarray, skew: np.ndarray):
        self.sorted_train = sorted_train  # (n, D) float64, each column sorted ascending
        self.skew = skew  # (D,) float64

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0) -> "CopodBaseline":
        """`seed` is unused: COPOD has no randomness."""
        x = np.asarray(x, np.float64)
        return cls(np.sort(x, axis=0), skewness(x))

    def tails(self, x: np.ndarray):
        """(U, V) of the docstring for (N, D) features, each (N, D) in (0, 1]."""
        x = np.asarray(x, np.float64)
        n = self.sorted_train.shape[0]
        at_most = np.empty(x.shape, np.float64)
        at_least = np.empty(x.shape, np.float64)
        for d in range(x.shape[1]):
            column = self.sorted_train[:, d]
            at_most[:, d] = np.searchsorted(column, x[:, d], side="right")
            at_least[:, d] = n - np.searchsorted(column, x[:, d], side="left")
        return (1.0 + at_most) / (n + 1.0), (1.0 + at_least) / (n + 1.0)

    def score(self, x: np.ndarray) -> np.ndarray:
        left, right = self.tails(x)
        p_left = -np.log(left).sum(axis=1)
        p_right = -np.log(right).sum(axis=1)
        p_skew = -np.log(np.where(self.skew < 0, left, right)).sum(axis=1)
        return np.maximum(np.maximum(p_left, p_right), p_skew)

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"sorted_train": self.sorted_train, "skewness": self.skew}

    def params(self) -> Dict[str, Any]:
        return {"n_train": int(self.sorted_train.shape[0])}

    @classmethod
    def from_arrays(cls, arrays, params, dim, where) -> "CopodBaseline":
        sorted_train = need_array(arrays, "sorted_train", "f", (None, dim), where)
        skew = need_array(arrays, "skewness", "f", (dim,), where)
        if sorted_train.shape[0] == 0 or (np.diff(sorted_train, axis=0) < 0).any():
            raise CheckpointError(f"{where}: COPOD's training values must be non-empty and sorted per feature; "
                                  "the file is damaged: fit it again")
        return cls(sorted_train.astype(np.float64), skew.astype(np.float64))

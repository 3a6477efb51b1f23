"""Isolation Forest (Liu et al., ICDM 2008): scikit-learn fits it, numpy walks its trees to score.

An anomaly is isolated by few random splits. The score of x is

    s(x) = 2 ** (-E[h(x)] / c(psi)),   h(x) = depth of x's leaf + c(n_leaf),
    c(n) = 2 (ln(n - 1) + gamma) - 2 (n - 1) / n   (c(2) = 1, c(1) = c(0) = 0)

over the trees, psi the sub-sample size of each tree: the positive anomaly score of the paper,
-IsolationForest.score_samples (higher = more anomalous). The file holds the trees as flat
arrays (sklearn's tree_.feature, threshold, children_left/right, n_node_samples, one block per
tree), so that scoring needs neither scikit-learn nor pickle; tests check the numbers against
scikit-learn's own.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from dad_edge.baselines.base import BaselineDetector, fit_library, need_array, need_number
from dad_edge.errors import CheckpointError

N_ESTIMATORS = 100  # scikit-learn's and pyod's default, as the diffusion study's baselines
MAX_SAMPLES = 256  # psi: min(256, N), the paper's sub-sample size ("auto")


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the mean depth of an unsuccessful search in a binary search tree of n keys."""
    n = np.asarray(n, np.float64)
    safe = np.maximum(n, 3.0)  # keeps log(n - 1) defined where the value is replaced below
    c = 2.0 * (np.log(safe - 1.0) + np.euler_gamma) - 2.0 * (safe - 1.0) / safe
    return np.where(n <= 1, 0.0, np.where(n == 2, 1.0, c))


class IsolationForestBaseline(BaselineDetector):
    name = "iforest"
    fit_module = "sklearn.ensemble"

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
                 n_node_samples: np.ndarray, roots: np.ndarray, max_samples: int, seed: int):
        self.feature = feature  # (nodes,) int64: split feature, < 0 at leaves
        self.threshold = threshold  # (nodes,) float64: go left when x[feature] <= threshold
        self.left, self.right = left, right  # (nodes,) int64 global node indices, -1 at leaves
        self.n_node_samples = n_node_samples  # (nodes,) int64 training samples through each node
        self.roots = roots  # (trees,) int64: each tree's first node
        self.max_samples, self.seed = max_samples, seed
        self._leaf_length = _node_depths(left, right, roots) + average_path_length(n_node_samples)

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0) -> "IsolationForestBaseline":
        forest_class = fit_library(cls.fit_module).IsolationForest
        forest = forest_class(n_estimators=N_ESTIMATORS, max_samples=min(MAX_SAMPLES, len(x)), max_features=1.0,
                              random_state=seed, n_jobs=1).fit(x)
        blocks = {k: [] for k in ("feature", "threshold", "left", "right", "n_node_samples")}
        roots, offset = [], 0
        for est in forest.estimators_:
            t = est.tree_
            roots.append(offset)
            blocks["feature"].append(np.where(t.children_left >= 0, t.feature, -1))
            blocks["threshold"].append(t.threshold)
            for side, children in (("left", t.children_left), ("right", t.children_right)):
                blocks[side].append(np.where(children >= 0, children + offset, -1))
            blocks["n_node_samples"].append(t.n_node_samples)
            offset += t.node_count
        flat = {k: np.concatenate(v).astype(np.float64 if k == "threshold" else np.int64) for k, v in blocks.items()}
        return cls(**flat, roots=np.asarray(roots, np.int64), max_samples=int(forest.max_samples_), seed=seed)

    def score(self, x: np.ndarray) -> np.ndarray:
        # scikit-learn compares float32 features with float64 thresholds: the same here, split for split.
        x32 = np.asarray(x, np.float32)
        rows = np.arange(len(x32))[:, None]
        node = np.repeat(self.roots[None, :], len(x32), axis=0)  # (N, trees)
        while True:
            feat = self.feature[node]
            inner = feat >= 0
            if not inner.any():
                break
            go_left = x32[rows, np.maximum(feat, 0)] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        depth = self._leaf_length[node].sum(axis=1)  # (N,) summed over trees
        return 2.0 ** (-depth / (len(self.roots) * float(average_path_length(self.max_samples))))

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"feature": self.feature, "threshold": self.threshold, "left": self.left, "right": self.right,
                "n_node_samples": self.n_node_samples, "roots": self.roots}

    def params(self) -> Dict[str, Any]:
        return {"n_estimators": int(len(self.roots)), "max_samples": self.max_samples, "seed": self.seed}

    @classmethod
    def from_arrays(cls, arrays, params, dim, where) -> "IsolationForestBaseline":
        n = need_array(arrays, "feature", "i", (None,), where).shape[0]
        feature = arrays["feature"]
        threshold = need_array(arrays, "threshold", "f", (n,), where)
        left, right, counts = (need_array(arrays, k, "i", (n,), where) for k in ("left", "right", "n_node_samples"))
        roots = need_array(arrays, "roots", "i", (need_number(params, "n_estimators", where, integer=True),), where)
        inner = feature >= 0
        index = np.arange(n)
        # Children after their parent (scikit-learn's depth-first order): the walk in score() must end.
        ok = (n > 0 and (feature < dim).all() and (left[~inner] == -1).all() and (right[~inner] == -1).all()
              and (left[inner] > index[inner]).all() and (right[inner] > index[inner]).all()
              and (left < n).all() and (right < n).all() and (roots >= 0).all() and (roots < n).all()
              and (counts >= 0).all())
        if not ok:
            raise CheckpointError(f"{where}: the Isolation Forest's tree arrays are inconsistent (child indices, "
                                  f"split features for {dim} features); the file is damaged: fit it again")
        return cls(feature.astype(np.int64), threshold.astype(np.float64), left.astype(np.int64),
                   right.astype(np.int64), counts.astype(np.int64), roots.astype(np.int64),
                   need_number(params, "max_samples", where, integer=True),
                   need_number(params, "seed", where, integer=True, positive=False))


def _node_depths(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Depth of every node (roots 0), one level of all trees at a time."""
    depth = np.zeros(left.shape[0], np.float64)
    frontier, level = roots, 0
    while frontier.size:
        depth[frontier] = level
        inner = frontier[left[frontier] >= 0]
        frontier = np.concatenate((left[inner], right[inner]))
        level += 1
    return depth

"""One-Class SVM (Schoelkopf et al., 2001): scikit-learn fits it, numpy evaluates its decision function.

With an RBF kernel the fitted function is

    f(x) = sum_i alpha_i exp(-gamma ||x - sv_i||^2) + rho

(alpha: dual_coef_, sv: support_vectors_, rho: intercept_), positive inside the support of
the normal images; the image score is -f(x) (higher = more anomalous). The file holds the
support vectors, coefficients, intercept and gamma, so scoring needs neither scikit-learn nor
pickle; tests check the numbers against OneClassSVM.decision_function.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from dad_edge.baselines.base import BaselineDetector, fit_library, need_array, need_number
from dad_edge.errors import CheckpointError

# scikit-learn's (and pyod's) defaults, as the diffusion study's baselines: nu bounds the share
# of training images left outside the boundary; gamma "scale" = 1 / (D * var(x)), about 1 / D
# on standardised features.
NU = 0.5
GAMMA = "scale"


class OneClassSVMBaseline(BaselineDetector):
    name = "ocsvm"
    fit_module = "sklearn.svm"

    def __init__(self, support_vectors: np.ndarray, dual_coef: np.ndarray, intercept: float, gamma: float,
                 nu: float):
        self.support_vectors = support_vectors  # (n_sv, D) float64
        self.dual_coef = dual_coef  # (n_sv,) float64
        self.intercept, self.gamma, self.nu = intercept, gamma, nu
        self._sv_norms = np.einsum("ij,ij->i", support_vectors, support_vectors)  # (n_sv,)

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0) -> "OneClassSVMBaseline":
        """`seed` is unused: libsvm's solver is deterministic."""
        svm = fit_library(cls.fit_module).OneClassSVM(kernel="rbf", nu=NU, gamma=GAMMA).fit(np.asarray(x, np.float64))
        return cls(np.asarray(svm.support_vectors_, np.float64), np.asarray(svm.dual_coef_, np.float64)[0],
                   float(svm.intercept_[0]), float(svm._gamma), NU)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """f(x), (N,): positive inside the boundary, as OneClassSVM.decision_function."""
        x = np.asarray(x, np.float64)
        # ||x - sv||^2 expanded: one matrix product instead of an (N, n_sv, D) difference.
        sq = np.einsum("ij,ij->i", x, x)[:, None] + self._sv_norms[None, :] - 2.0 * (x @ self.support_vectors.T)
        kernel = np.exp(-self.gamma * np.maximum(sq, 0.0))  # (N, n_sv)
        return kernel @ self.dual_coef + self.intercept

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.decision_function(x)

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"support_vectors": self.support_vectors, "dual_coef": self.dual_coef}

    def params(self) -> Dict[str, Any]:
        return {"kernel": "rbf", "nu": self.nu, "gamma": self.gamma, "intercept": self.intercept}

    @classmethod
    def from_arrays(cls, arrays, params, dim, where) -> "OneClassSVMBaseline":
        sv = need_array(arrays, "support_vectors", "f", (None, dim), where)
        coef = need_array(arrays, "dual_coef", "f", (sv.shape[0],), where)
        if sv.shape[0] == 0 or params.get("kernel") != "rbf":
            raise CheckpointError(f"{where}: a One-Class SVM needs at least one support vector and kernel 'rbf' "
                                  f"(found {sv.shape[0]}, {params.get('kernel')!r}); fit it again")
        return cls(sv.astype(np.float64), coef.astype(np.float64),
                   float(need_number(params, "intercept", where, positive=False)),
                   float(need_number(params, "gamma", where)), float(need_number(params, "nu", where)))

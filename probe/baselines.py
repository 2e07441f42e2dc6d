"""The two references that need no GPU: logistic regression and a weighted k-NN.

- logreg: scikit-learn's LogisticRegression (L-BFGS, multinomial) on the standardized
  features, one fit per C; C is chosen on the validation rows.
- knn: DINO's k-NN evaluation: cosine similarity to every training row, the k nearest
  vote with weight exp(similarity / T). The bank is streamed block by block, keeping a
  running top-k, so the training features never need to fit in memory.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from probe.metrics import topk_from_scores


def fit_logreg(
    x: np.ndarray, y: np.ndarray, c: float, seed: int, max_iter: int = 1000
) -> tuple[LogisticRegression, bool]:
    """x: (n, D) standardized features, y: (n,) -> (fitted model, whether L-BFGS converged).
    Labels absent from y get no row; `logreg_weights` expands the coefficients to all classes."""
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def logreg_weights(model: LogisticRegression, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, D) weight and (classes,) bias; classes never seen in training score -inf."""
    coef, bias = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes: logits (-z/2, z/2) rank alike
        coef, bias = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    weight = np.zeros((classes, coef.shape[1]), np.float32)
    full_bias = np.full(classes, -1e9, np.float32)
    weight[model.classes_] = coef
    full_bias[model.classes_] = bias
    return weight, full_bias


def logreg_top(model: LogisticRegression, x: np.ndarray, classes: int, k: int = 5) -> np.ndarray:
    weight, bias = logreg_weights(model, classes)
    return topk_from_scores(x @ weight.T + bias, k)


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class KnnBank:
    """A running top-k of cosine similarities from query rows to streamed bank rows."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = torch.from_numpy(normalize(queries.astype(np.float32)))
        self.k = k
        self.sims = torch.full((len(queries), 0), -2.0)
        self.labels = torch.zeros((len(queries), 0), dtype=torch.long)

    def add(self, bank: np.ndarray, labels: np.ndarray) -> None:
        sims = self.q @ torch.from_numpy(normalize(bank.astype(np.float32))).T
        both = torch.cat([self.sims, sims], dim=1)
        both_labels = torch.cat([self.labels, torch.from_numpy(labels).long().expand(len(self.q), -1)], dim=1)
        keep = min(self.k, both.shape[1])
        self.sims, idx = both.topk(keep, dim=1)
        self.labels = both_labels.gather(1, idx)

    def top(self, k: int, classes: int, temperature: float, kk: int = 5) -> np.ndarray:
        """DINO's vote with the k nearest: (n, min(5, classes)) class indices, best first."""
        k = min(k, self.sims.shape[1])
        weights = (self.sims[:, :k] / temperature).exp()
        votes = torch.zeros(len(self.q), classes, dtype=torch.float64)
        votes.scatter_add_(1, self.labels[:, :k], weights.double())
        return topk_from_scores(votes.numpy(), kk)

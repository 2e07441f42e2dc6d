"""The Inception Score, the kernel distance (KID) and the class balance of feature rows, in numpy.

They follow the conventions of torch-fidelity, which the ADM evaluation suite's numbers are
usually compared with, and are tested against its functions on the same features:

- Inception Score (Salimans et al., 2016): softmax of the 1008 logits (torch-fidelity's
  `logits_unbiased`), the rows shuffled by a seeded permutation, split in `splits` parts; per part
  exp(mean KL(p(y|x) || p(y))); the mean and the (population) standard deviation over parts.
- Kernel distance (Binkowski et al., 2018; KID in Inception's pool3 features): `subsets` random
  subsets of `subset_size` rows drawn without replacement from each side, the unbiased MMD^2
  under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3; its mean and standard deviation.
- Class balance: the share of rows a classifier assigns to each class (argmax of its logits), and
  the total variation distance between two such shares (half the sum of absolute differences:
  the share of samples that would have to change class for the two to match). A generator that
  drops classes can keep a high precision; this shows which classes it drops.
"""

from __future__ import annotations

import numpy as np

IS_SPLITS, IS_SEED = 10, 2020
KID_SUBSETS, KID_SUBSET_SIZE, KID_SEED = 100, 1000, 2020


def inception_score(
    logits: np.ndarray, splits: int = IS_SPLITS, shuffle: bool = True, seed: int = IS_SEED
) -> tuple[float, float]:
    """logits (n, classes) -> (mean, std) of the Inception Score over `splits` parts."""
    x = np.asarray(logits, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or n < splits:
        raise ValueError(f"the Inception Score needs at least {splits} rows of logits, got shape {x.shape}")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        marginal = p[part].mean(axis=0, keepdims=True)
        scores.append(float(np.exp((p[part] * (log_p[part] - np.log(marginal))).sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = len(k_xx)
    off_x = k_xx.sum() - np.trace(k_xx)
    off_y = k_yy.sum() - np.trace(k_yy)
    return float((off_x + off_y) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_distance(
    a: np.ndarray,
    b: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    degree: int = 3,
    coef0: float = 1.0,
    seed: int = KID_SEED,
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 between a (n1, d) and b (n2, d) over random subsets."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kernel distance: feature rows of one width needed, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < subset_size:
        raise ValueError(
            f"kernel distance: subsets of {subset_size} rows need that many on each side "
            f"({len(a)} and {len(b)})"
        )
    gamma = 1.0 / a.shape[1]
    rng = np.random.RandomState(seed)

    def k(x, y):
        return (x @ y.T * gamma + coef0) ** degree

    values = np.zeros(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), subset_size, replace=False)]
        y = b[rng.choice(len(b), subset_size, replace=False)]
        values[i] = _mmd2_unbiased(k(x, x), k(x, y), k(y, y))
    return float(values.mean()), float(values.std())


def class_shares(logits: np.ndarray) -> np.ndarray:
    """logits (n, classes) -> (classes,): the share of rows whose largest logit is each class."""
    x = np.asarray(logits)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"class shares need rows of logits, got shape {x.shape}")
    return np.bincount(x.argmax(axis=1), minlength=x.shape[1]) / len(x)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two distributions over the same classes, in [0, 1]."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"total variation: shares over {p.shape} and {q.shape} classes")
    return float(0.5 * np.abs(p - q).sum())

"""Seeded, class-balanced subsets, so that small runs still see every class equally."""

from __future__ import annotations

import numpy as np


def balanced_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n` items, as equal a share per class as the classes allow, seeded."""
    labels = np.asarray(labels)
    if not 0 < n <= len(labels):
        raise ValueError(f"subset size must be between 1 and {len(labels)}, got {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    # Deal out one item per class per round; the last round's classes are chosen at random.
    quota = np.zeros(len(classes), dtype=np.int64)
    left = n
    while left:
        open_ = np.flatnonzero(quota < [len(p) for p in pools])
        if left >= len(open_):
            quota[open_] += 1
            left -= len(open_)
        else:
            quota[rng.choice(open_, size=left, replace=False)] += 1
            left = 0
    return np.sort(np.concatenate([pool[:q] for pool, q in zip(pools, quota, strict=True)]))

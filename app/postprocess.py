"""Logits -> top-k (index, probability), softmax in float64 for stable small probabilities."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) logits -> indices (N, k) and probabilities (N, k), best first, ties by index."""
    k = min(k, logits.shape[-1])
    probs = softmax(logits)
    # stable sort on -prob gives descending scores, lower index first among equals
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=-1)

"""Logits -> top-k (index, probability), softmax in float64 for stable small probabilities."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, C) scores -> (N, min(k, C)) class indices, best first, the lower index first among
    equal scores (a stable sort on -score): /v1, V2's classification and check agree."""
    return np.argsort(-scores, axis=-1, kind="stable")[:, : min(k, scores.shape[-1])]


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) logits -> indices (N, k) and probabilities (N, k), best first, ties by index."""
    probs = softmax(logits)
    order = top_k_indices(probs, k)
    return order, np.take_along_axis(probs, order, axis=-1)

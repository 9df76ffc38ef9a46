"""How far one model's logits are from another's: the arithmetic export, check, the digits
recipe and the tests share (one definition each)."""

from __future__ import annotations

import numpy as np

from app.postprocess import top_k_indices


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    """max |a - b| / max |a|: the error relative to the logits' own scale."""
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(reference.astype(np.float64) - other).max() / scale)


def accuracy(logits: np.ndarray, truth: np.ndarray) -> float:
    """Share of rows whose best class is the true one."""
    return float((logits.argmax(axis=1) == truth).mean())


def compare(reference: np.ndarray, logits: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, top-5 set agreement, max relative logit error)."""
    top1 = float((reference.argmax(1) == logits.argmax(1)).mean())
    ref5 = np.sort(top_k_indices(reference, 5), axis=1)
    got5 = np.sort(top_k_indices(logits, 5), axis=1)
    top5 = float((ref5 == got5).all(axis=1).mean())
    return top1, top5, relative_error(reference, logits)

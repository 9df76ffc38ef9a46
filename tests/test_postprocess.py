"""top_k_indices: the partial sort gives exactly the stable full sort's answer (ties by index)."""

from __future__ import annotations

import numpy as np
import pytest

from app.postprocess import top_k, top_k_indices


def reference(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=-1, kind="stable")[:, : min(k, scores.shape[-1])]


@pytest.mark.parametrize("k", [1, 2, 5, 10, 100, 249, 250, 999, 1000, 1001])
def test_matches_the_stable_sort_with_many_ties(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 7, size=(6, 1000)).astype(np.float32)  # every score tied
    assert np.array_equal(top_k_indices(scores, k), reference(scores, k))


def test_matches_on_real_valued_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((32, 1000))
    for k in (1, 5, 20):
        assert np.array_equal(top_k_indices(scores, k), reference(scores, k))


def test_a_tie_at_the_kth_place_keeps_the_lower_indices() -> None:
    scores = np.zeros((1, 1000))
    scores[0, [900, 3, 500]] = 1.0  # three tied best, out of index order
    scores[0, [999, 7]] = 0.5
    assert top_k_indices(scores, 4).tolist() == [[3, 500, 900, 7]]


def test_nan_scores_sort_last_as_in_the_full_sort() -> None:
    scores = np.full((2, 1000), np.nan)
    scores[1, 10] = 2.0
    scores[1, 20] = 1.0
    assert np.array_equal(top_k_indices(scores, 5), reference(scores, 5))
    assert top_k_indices(scores, 3)[1].tolist()[:2] == [10, 20]


def test_top_k_probabilities_follow_the_indices() -> None:
    logits = np.array([[0.0, 3.0, 1.0, 3.0] + [-5.0] * 96])
    indices, probs = top_k(logits, 3)
    assert indices.tolist() == [[1, 3, 2]]
    assert probs[0, 0] == probs[0, 1] > probs[0, 2]
    assert abs(np.exp(logits[0]).sum() * probs[0, 0] - np.exp(3.0)) < 1e-9

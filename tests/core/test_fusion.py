"""Fusion of ranked lists: reciprocal-rank order, weights and deterministic ties."""

from __future__ import annotations

import pytest

from core.fusion import feedback_vector, fuse, fuse_scores


def ids(fused: list[tuple[str, float]]) -> list[str]:
    return [doc_id for doc_id, _ in fused]


def test_rrf_order_on_a_hand_example() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    sparse = [("b", 12.0), ("d", 9.0), ("a", 1.0)]
    fused = fuse([dense, sparse], [1.0, 1.0], k=60)
    # b: 1/62 + 1/61; a: 1/61 + 1/63; d: 1/62; c: 1/63. The scores are ignored, only ranks count.
    assert ids(fused) == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1][1] == pytest.approx(1 / 61 + 1 / 63)


def test_weights_shift_the_order() -> None:
    dense = [("a", 0.9), ("b", 0.1)]
    sparse = [("b", 5.0), ("a", 1.0)]
    assert ids(fuse([dense, sparse], [2.0, 1.0], k=60))[0] == "a"
    assert ids(fuse([dense, sparse], [1.0, 2.0], k=60))[0] == "b"


def test_ties_are_broken_by_id_whatever_the_input_order() -> None:
    first = fuse([[("y", 1.0)], [("x", 1.0)]], [1.0, 1.0], k=60)
    second = fuse([[("x", 1.0)], [("y", 1.0)]], [1.0, 1.0], k=60)
    assert first == second
    assert ids(first) == ["x", "y"]


def test_small_k_favours_the_top_of_each_list() -> None:
    dense = [("a", 1.0), ("x", 0.5), ("b", 0.1)]
    sparse = [("y", 3.0), ("z", 2.0), ("b", 1.0)]
    # b, third in both lists, beats each list's winner only when k flattens the ranks.
    assert ids(fuse([dense, sparse], [1.0, 1.0], k=0))[:2] == ["a", "y"]
    assert ids(fuse([dense, sparse], [1.0, 1.0], k=60))[0] == "b"


def test_repeated_id_in_one_list_counts_once() -> None:
    assert fuse([[("a", 1.0), ("a", 0.5)]], [1.0], k=60) == [("a", pytest.approx(1 / 61))]


def test_mismatched_weights_are_refused() -> None:
    with pytest.raises(ValueError):
        fuse([[("a", 1.0)]], [1.0, 1.0], k=60)


def test_score_fusion_keeps_score_gaps() -> None:
    # Dense: a barely ahead of b. Sparse: b far ahead of a. Ranks tie, scores do not.
    dense = [("a", 0.81), ("b", 0.80), ("c", 0.10)]
    sparse = [("b", 20.0), ("a", 2.0), ("c", 1.0)]
    assert ids(fuse([dense, sparse], [1.0, 1.0], k=60))[:2] == ["a", "b"]  # tie on ranks, id decides
    fused = fuse_scores([dense, sparse], [1.0, 1.0])
    assert ids(fused) == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(0.70 / 0.71 + 1.0)
    assert fused[-1][1] == pytest.approx(0.0)


def test_score_fusion_weights_and_missing_ids() -> None:
    dense = [("a", 0.9), ("b", 0.1)]
    sparse = [("c", 3.0), ("b", 1.0)]
    assert ids(fuse_scores([dense, sparse], [2.0, 1.0]))[0] == "a"
    assert ids(fuse_scores([dense, sparse], [1.0, 2.0]))[0] == "c"
    assert fuse_scores([[("x", 5.0)], []], [1.0, 1.0]) == [("x", 1.0)]


def test_feedback_vector_moves_the_query_toward_the_hits() -> None:
    query = [1.0, 0.0, 0.0]
    hits = [[0.0, 1.0, 0.0], [0.0, 0.6, 0.8]]
    moved = feedback_vector(query, hits, weight=1.0)
    assert sum(v * v for v in moved) == pytest.approx(1.0)
    # Unit query plus the hits' mean (0, 0.8, 0.4), normalised.
    norm = (1 + 0.64 + 0.16) ** 0.5
    assert moved == pytest.approx([1 / norm, 0.8 / norm, 0.4 / norm])
    # Closer to the hits than the query was, still closest to the query itself.
    assert moved[1] > 0 and moved[0] > moved[1]


def test_feedback_vector_without_hits_or_weight_is_the_normalised_query() -> None:
    assert feedback_vector([3.0, 4.0], []) == pytest.approx([0.6, 0.8])
    assert feedback_vector([3.0, 4.0], [[1.0, 0.0]], weight=0.0) == pytest.approx([0.6, 0.8])
    with pytest.raises(ValueError):
        feedback_vector([1.0, 0.0], [[1.0, 0.0, 0.0]])

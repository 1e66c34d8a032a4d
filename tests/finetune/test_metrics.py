"""EM, F1 and precision/recall@k against values computed by hand on a fixed small predictions file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag_core import metrics
from rag_core.training.evaluation import e2e_metrics, retrieval_metrics

# A fixed predictions file, as the evaluate commands write it (one JSON object per line).
PREDICTIONS = [
    {"question": "q1", "answer": "The Eiffel Tower!", "gold_answers": ["eiffel tower"],
     "titles": ["Paris", "Paris", "France"], "doc_ids": [3, 3, 7], "gold": ["Paris"]},
    {"question": "q2", "answer": "in Paris France", "gold_answers": ["Paris", "Lyon"],
     "titles": ["Berlin", "Paris", "Lyon"], "doc_ids": [2, 3, 9], "gold": ["Paris", "Lyon", "Rome"]},
    {"question": "q3", "answer": "a cat", "gold_answers": ["the dog", "dog"],
     "titles": ["Dog", "Cat", "Dog"], "doc_ids": [5, 6, 5], "gold": ["Mouse"]},
    {"question": "q4", "answer": "", "gold_answers": ["nothing"],
     "titles": ["Nile", "Amazon", "Everest"], "doc_ids": [7, 9, 8], "gold": ["Everest"]},
]


@pytest.fixture
def predictions_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PREDICTIONS))
    return path


def test_normalisation():
    assert metrics.normalize_answer("  The  Eiffel-Tower, an icon!") == "eiffeltower icon"
    assert metrics.normalize_answer("A Theatre") == "theatre"  # only whole-word articles go


def test_e2e_metrics_by_hand(predictions_file):
    records = [json.loads(line) for line in predictions_file.read_text().splitlines()]
    # q1: "eiffel tower" == "eiffel tower"                     -> EM 1, F1 1
    # q2: tokens {in, paris, france} vs "paris": common 1, P = 1/3, R = 1/1, F1 = 2*(1/3)/(4/3) = 0.5;
    #     vs "lyon": 0                                         -> EM 0, F1 0.5
    # q3: "cat" vs "dog": no common token                      -> EM 0, F1 0
    # q4: empty prediction                                     -> EM 0, F1 0
    # means: EM = 1/4 = 0.25, F1 = (1 + 0.5 + 0 + 0) / 4 = 0.375
    assert [metrics.exact_match(r["answer"], r["gold_answers"]) for r in records] == [1.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose([metrics.f1(r["answer"], r["gold_answers"]) for r in records], [1.0, 0.5, 0.0, 0.0])
    result = e2e_metrics(records)
    assert result["n"] == 4
    np.testing.assert_allclose([result["em"], result["f1"]], [0.25, 0.375])


def test_retrieval_metrics_by_hand(predictions_file):
    records = [json.loads(line) for line in predictions_file.read_text().splitlines()]
    # k = 3, titles (duplicates counted once, divided by k):
    # q1: {Paris, France} & {Paris} = 1          -> P = 1/3, R = 1/1
    # q2: {Berlin, Paris, Lyon} & {Paris, Lyon, Rome} = 2 -> P = 2/3, R = 2/3
    # q3: {Dog, Cat} & {Mouse} = 0               -> P = 0,   R = 0
    # q4: {Nile, Amazon, Everest} & {Everest} = 1 -> P = 1/3, R = 1
    # P@3 = (1/3 + 2/3 + 0 + 1/3) / 4 = 1/3;  R@3 = (1 + 2/3 + 0 + 1) / 4 = 2/3
    result = retrieval_metrics(records, k=3)
    np.testing.assert_allclose([result["precision@3"], result["recall@3"]], [1 / 3, 2 / 3])
    # k = 1: first titles Paris (gold), Berlin, Dog, Nile -> hits 1, 0, 0, 0:
    # P@1 = (1/1 + 0 + 0 + 0) / 4 = 0.25; R@1 = (1/1 + 0/3 + 0/1 + 0/1) / 4 = 0.25
    result = retrieval_metrics(records, k=1)
    np.testing.assert_allclose([result["precision@1"], result["recall@1"]], [0.25, 0.25])


def test_retrieval_by_passage_ids_by_hand():
    # ids [3, 3, 7] against gold {3, 8}: {3, 7} & {3, 8} = {3} -> P@3 = 1/3, R@3 = 1/2
    np.testing.assert_allclose(metrics.precision_at_k([3, 3, 7], [3, 8], k=3), 1 / 3)
    np.testing.assert_allclose(metrics.recall_at_k([3, 3, 7], [3, 8], k=3), 0.5)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        metrics.precision_at_k([1], [1], k=0)
    with pytest.raises(ValueError, match="no gold answers"):
        metrics.exact_match("x", [])

"""Question-answering and retrieval metrics: exact match, F1, precision@k and recall@k. Pure Python.

End to end (generated answers against gold answers), as SQuAD v1.1 and the original `eval_rag.py`:
answers are normalised (lower case, punctuation removed, the articles a/an/the removed, whitespace
collapsed), and a prediction scores the best value over its gold answers.

- `exact_match`: 1.0 when the normalised prediction equals a normalised gold answer.
- `f1`: harmonic mean of token precision and recall over the normalised tokens (a bag of words:
  a token counts as often as it occurs in both). No common token (also: an empty prediction or an
  empty gold answer) gives 0.0, as in SQuAD v1.1.

Retrieval (retrieved passages against gold passages, by title or by passage id):

- `precision_at_k`: distinct gold items among the first k retrieved, divided by k. A title retrieved
  twice counts once (several passages of one article), as in `eval_rag.py`.
- `recall_at_k`: distinct gold items among the first k retrieved, divided by the number of distinct
  gold items (0.0 without gold items).

Scores are fractions in [0, 1]; `e2e_scores` / `retrieval_scores` average them over questions.

Example:
    >>> exact_match("The Eiffel tower!", ["eiffel tower"]), round(f1("in Paris France", ["Paris"]), 3)
    (1.0, 0.5)
    >>> precision_at_k(["Paris", "Paris", "Berlin"], ["Paris"], k=3)  # Paris counted once: 1 / 3
    0.3333333333333333
"""

from __future__ import annotations

import collections
import re
import string
from typing import Hashable, Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in str(text).lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _as_golds(gold_answers) -> list[str]:
    if isinstance(gold_answers, str):
        return [gold_answers]
    golds = list(gold_answers)
    if not golds:
        raise ValueError("no gold answers to compare with")
    return golds


def _exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold_answers) -> float:
    """Best exact match over the gold answers (a string or a list of strings): 0.0 or 1.0."""
    return max(_exact(prediction, gold) for gold in _as_golds(gold_answers))


def f1(prediction: str, gold_answers) -> float:
    """Best token F1 over the gold answers (a string or a list of strings)."""
    return max(_f1(prediction, gold) for gold in _as_golds(gold_answers))


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return k


def precision_at_k(retrieved: Sequence[Hashable], gold: Iterable[Hashable], k: int) -> float:
    """Distinct gold items among `retrieved[:k]`, divided by k."""
    k = _check_k(k)
    return len(set(retrieved[:k]) & set(gold)) / k


def recall_at_k(retrieved: Sequence[Hashable], gold: Iterable[Hashable], k: int) -> float:
    """Distinct gold items among `retrieved[:k]`, divided by the number of distinct gold items."""
    k, gold = _check_k(k), set(gold)
    if not gold:
        return 0.0
    return len(set(retrieved[:k]) & gold) / len(gold)


def e2e_scores(predictions: Sequence[str], gold_answers: Sequence) -> dict:
    """`{"em", "f1", "n"}`: mean exact match and F1 over the questions."""
    if len(predictions) != len(gold_answers):
        raise ValueError(f"{len(predictions)} predictions but {len(gold_answers)} gold answer lists")
    n = len(predictions)
    if n == 0:
        return {"em": 0.0, "f1": 0.0, "n": 0}
    return {
        "em": sum(exact_match(p, g) for p, g in zip(predictions, gold_answers)) / n,
        "f1": sum(f1(p, g) for p, g in zip(predictions, gold_answers)) / n,
        "n": n,
    }


def retrieval_scores(retrieved: Sequence[Sequence[Hashable]], gold: Sequence[Iterable[Hashable]], k: int) -> dict:
    """`{"precision@k", "recall@k", "k", "n"}`: means over the questions."""
    if len(retrieved) != len(gold):
        raise ValueError(f"{len(retrieved)} retrieval results but {len(gold)} gold lists")
    n = len(retrieved)
    if n == 0:
        return {f"precision@{k}": 0.0, f"recall@{k}": 0.0, "k": k, "n": 0}
    return {
        f"precision@{k}": sum(precision_at_k(r, g, k) for r, g in zip(retrieved, gold)) / n,
        f"recall@{k}": sum(recall_at_k(r, g, k) for r, g in zip(retrieved, gold)) / n,
        "k": k,
        "n": n,
    }

"""RAG-Sequence candidate handling, written once for both frameworks, on numpy arrays.

`RagSequenceForGeneration.generate` (rag_pt) and `TFRagSequenceForGeneration.generate` (rag_tf)
decode every (passage, question) pair, then do the same bookkeeping on the candidates before and
after the generator's forward pass that scores them. That bookkeeping is here; the frameworks keep
only the tensor maths (decoding, and the per-position log-probabilities of candidates under
passages, in chunks of at most `RESCORE_CHUNK_BYTES` of logits):

1. `same_sequences` / `first_occurrences`: deduplication of the candidates by token ids;
2. `rescore_plan`: which candidates to score under which generator rows, their targets, which
   target positions count, and per question whether the BOS position is dropped;
3. `beam_logprob_sums`: beam search's length normalisation undone ("fast" rescoring);
4. `sequence_scores` / `fast_scores`: the ranking scores (the RAG-Sequence marginal, with label
   smoothing as in the loss, or the fast approximation);
5. `select_top`: the best `num_return_sequences` per question, padded when there are fewer.

`rank_candidates` runs the five steps; the framework passes the tensor part as a hook,
`score_candidates(plan, with_smooth) -> (token_logprobs, smooth_logprobs)`.

Shapes: B questions, N passages per question, C = N * beams candidates per question (grouped by
passage), S candidate length, K candidates scored, P generator rows per scored candidate (N for
"thorough", 1 for greedy "fast"), V vocabulary. Imports neither torch nor tensorflow.

    >>> import numpy as np
    >>> candidates = np.array([[[2, 5, 2], [2, 5, 2], [2, 6, 2]]])  # one question, three candidates
    >>> first_occurrences(same_sequences(candidates)).tolist()
    [[True, False, True]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np

# Upper bound on the logits one rescoring chunk materialises: 128 MiB, i.e. 2**25 float32 values.
# Both frameworks chunk the candidates they score by `rescore_chunk_candidates`.
RESCORE_CHUNK_BYTES = 128 * 2**20


def rescore_chunk_candidates(
    rows_per_candidate: int, length: int, vocab_size: int, itemsize: int = 4, budget_bytes: Optional[int] = None
) -> int:
    """How many candidates one rescoring chunk holds: each is `rows_per_candidate` generator rows of
    `(length, vocab_size)` logits of `itemsize` bytes; at least one whatever the budget."""
    budget = RESCORE_CHUNK_BYTES if budget_bytes is None else int(budget_bytes)
    per_candidate = max(1, int(rows_per_candidate) * int(length) * int(vocab_size) * int(itemsize))
    return max(1, budget // per_candidate)


def shift_targets_left(labels: np.ndarray, pad_token_id: int) -> np.ndarray:
    """`labels[:, 1:]` followed by one pad: the token each decoder position must predict."""
    labels = np.asarray(labels)
    pad = np.full((labels.shape[0], 1), pad_token_id, dtype=labels.dtype)
    return np.concatenate([labels[:, 1:], pad], axis=1)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """logsumexp that returns -inf (not NaN) for a slice of -inf only."""
    x = np.asarray(x, dtype=np.float64)
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


# === 1. deduplication ===
def same_sequences(candidates: np.ndarray) -> np.ndarray:
    """`same[b, i, j]`: candidates i and j of question b are the same token ids, `(B, C, C)`."""
    candidates = np.asarray(candidates)
    return np.all(candidates[:, :, None, :] == candidates[:, None, :, :], axis=-1)


def first_occurrences(same: np.ndarray) -> np.ndarray:
    """`(B, C)`: True for the first occurrence of each distinct candidate (deduplication by token ids)."""
    count = same.shape[1]
    earlier = np.tril(np.ones((count, count), dtype=bool), k=-1)  # [i, j]: j < i
    return ~np.any(same & earlier[None], axis=-1)


# === 2. what to score ===
@dataclass
class RescorePlan:
    """The K candidates a generator forward pass scores, and how their scores are read.

    question / slot: `(K,)` the question and candidate slot of each; labels / target: `(K, S)`
    decoder inputs and targets (labels shifted left); rows: `(K, P)` generator rows (contexts) to
    score each under; keep: `(K, S)` target positions that count (not padding); exclude_first:
    `(K,)` drop target position 0 from the likelihood (BOS, per question as `exclude_bos_score`).
    """

    question: np.ndarray
    slot: np.ndarray
    labels: np.ndarray
    target: np.ndarray
    rows: np.ndarray
    keep: np.ndarray
    exclude_first: np.ndarray


def rescore_plan(
    candidates: np.ndarray,
    scored: np.ndarray,
    n_docs: int,
    pad_token_id: int,
    bos_token_id: Optional[int],
    own_passage_only: bool = False,
    num_beams: int = 1,
) -> RescorePlan:
    """The candidates `scored` `(B, C)` selects, each under all N passages of its question (the
    "thorough" rescoring), or with `own_passage_only` under the passage that produced it.

    The BOS position is dropped for a question when every scored candidate of that question has BOS
    as its first target (as the original, which rescored one question's candidates as one batch
    with `exclude_bos_score=True`); never with `own_passage_only` (a path scored as it was decoded).
    """
    candidates = np.asarray(candidates)
    batch_size = candidates.shape[0]
    question, slot = np.nonzero(scored)
    labels = candidates[question, slot]
    target = shift_targets_left(labels, pad_token_id)
    if own_passage_only:
        rows = (question * n_docs + slot // num_beams)[:, None]
    else:
        rows = question[:, None] * n_docs + np.arange(n_docs)[None, :]
    exclude = np.zeros(batch_size, dtype=bool)
    if bos_token_id is not None and not own_passage_only:
        not_bos = np.zeros(batch_size, dtype=np.int64)
        np.add.at(not_bos, question, (target[:, 0] != bos_token_id).astype(np.int64))
        exclude = not_bos == 0
    return RescorePlan(
        question=question,
        slot=slot,
        labels=labels,
        target=target,
        rows=rows,
        keep=target != pad_token_id,
        exclude_first=exclude[question],
    )


# === 3. beam scores ===
def generated_lengths(sequences: np.ndarray, eos_token_ids: Union[int, Sequence[int], None], pad_token_id: int) -> np.ndarray:
    """`(R,)` tokens generated after the decoder start token: up to and including the first EOS, else
    every non-pad token (the length beam search divided the score by)."""
    generated = np.asarray(sequences)[:, 1:]
    eos = [] if eos_token_ids is None else ([eos_token_ids] if np.isscalar(eos_token_ids) else list(eos_token_ids))
    is_eos = np.isin(generated, np.asarray(eos, dtype=generated.dtype))
    return np.where(is_eos.any(1), is_eos.argmax(1) + 1, (generated != pad_token_id).sum(1))


def beam_logprob_sums(
    sequences_scores: np.ndarray,
    sequences: np.ndarray,
    eos_token_ids: Union[int, Sequence[int], None],
    pad_token_id: int,
    length_penalty: float,
) -> np.ndarray:
    """Undo beam search's length normalisation: `sequences_scores * generated_length ** length_penalty`,
    the sum of the beam's token log-probabilities."""
    lengths = generated_lengths(sequences, eos_token_ids, pad_token_id).astype(np.float64)
    return np.asarray(sequences_scores, dtype=np.float64) * lengths**length_penalty


# === 4. scores ===
def sequence_scores(
    plan: RescorePlan,
    token_logprobs: np.ndarray,
    smooth_logprobs: Optional[np.ndarray],
    doc_logprobs: np.ndarray,
    vocab_size: int,
    epsilon: float = 0.0,
) -> np.ndarray:
    """`(K,)` minus the RAG-Sequence loss of each planned candidate: the marginal log-likelihood
    `logsumexp_n(sum_t lp[n, t] + log p(z_n|x))`, mixed with label smoothing as the loss does:
    `(1 - eps) * ll + eps / V * logsumexp_n(sum_t sum_v lp[n, t, v] + V * log p(z_n|x))`.

    `token_logprobs`, `smooth_logprobs`: `(K, P, S)` per-position `log p(target)` and
    `sum_v log p(v)` under the plan's rows; `doc_logprobs`: `(B, N)`, `log p(z|x)` of the questions.
    """
    token_logprobs = np.asarray(token_logprobs, dtype=np.float64)
    rows_doc_logprobs = np.asarray(doc_logprobs, dtype=np.float64).reshape(-1)[plan.rows]  # (K, P)
    score_mask = plan.keep.copy()
    score_mask[:, 0] &= ~plan.exclude_first
    # where(), not a product with the mask: a -inf log-prob times 0 would be NaN
    ll = logsumexp(np.where(score_mask[:, None, :], token_logprobs, 0.0).sum(-1) + rows_doc_logprobs, axis=1)
    if not epsilon or smooth_logprobs is None:
        return ll
    smooth_logprobs = np.asarray(smooth_logprobs, dtype=np.float64)
    smooth = logsumexp(
        np.where(plan.keep[:, None, :], smooth_logprobs, 0.0).sum(-1) + vocab_size * rows_doc_logprobs, axis=1
    )
    return (1.0 - epsilon) * ll + (epsilon / vocab_size) * smooth


def own_logliks(plan: RescorePlan, token_logprobs: np.ndarray) -> np.ndarray:
    """`(K,)` sum of each candidate's target log-probs under its first (with `own_passage_only`: its
    only) planned row, padding left out."""
    token_logprobs = np.asarray(token_logprobs, dtype=np.float64)[:, 0, :]
    return np.where(plan.keep, token_logprobs, 0.0).sum(-1)


def scatter_scores(plan: RescorePlan, values: np.ndarray, shape: tuple) -> np.ndarray:
    """`(B, C)` with the planned candidates' `values` in their slots and -inf elsewhere."""
    scores = np.full(shape, -np.inf)
    scores[plan.question, plan.slot] = values
    return scores


def fast_scores(own: np.ndarray, doc_logprobs: np.ndarray, same: Optional[np.ndarray], num_beams: int) -> np.ndarray:
    """The paper's fast decoding: `(B, C)` log p(y|x) ~ logsumexp over the passages that produced y
    of `log p(z|x) + log p(y|x, z)`, from `own` `(B, C)` (each candidate's log-likelihood under its
    own passage). Without deduplication (`same` None) every candidate keeps its own term."""
    own = np.asarray(own, dtype=np.float64) + np.repeat(np.asarray(doc_logprobs, dtype=np.float64), num_beams, axis=1)
    if same is None:
        return own
    return logsumexp(np.where(same, own[:, None, :], -np.inf), axis=2)


# === 5. selection ===
def select_top(
    candidates: np.ndarray, scores: np.ndarray, num_return_sequences: int, pad_token_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best `num_return_sequences` candidates per question: `(B * R, S)` ids and `(B, R)` scores.

    Ties keep the earlier candidate; slots with score -inf (fewer distinct candidates than asked)
    become rows of padding with score -inf.
    """
    candidates = np.asarray(candidates)
    scores = np.asarray(scores, dtype=np.float64)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :num_return_sequences]
    top_scores = np.take_along_axis(scores, top, axis=1)
    chosen = np.take_along_axis(candidates, top[:, :, None], axis=1)
    chosen = np.where(np.isinf(top_scores)[:, :, None], np.asarray(pad_token_id, chosen.dtype), chosen)
    return chosen.reshape(-1, candidates.shape[-1]), top_scores


# === all steps ===
def rank_candidates(
    candidates: np.ndarray,
    doc_scores: np.ndarray,
    score_candidates: Callable[[RescorePlan, bool], tuple],
    *,
    num_beams: int,
    rescore: str,
    do_deduplication: bool,
    num_return_sequences: int,
    pad_token_id: int,
    bos_token_id: Optional[int],
    vocab_size: int,
    epsilon: float = 0.0,
    sequences_scores: Optional[np.ndarray] = None,
    eos_token_ids: Union[int, Sequence[int], None] = None,
    length_penalty: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate, score and select the candidates of `B` questions: `(B * R, S)` ids, `(B, R)` scores.

    `candidates`: `(B * N * num_beams, S)` as decoded, grouped by question, then passage, then beam;
    `doc_scores`: `(B, N)`. "thorough" scores every kept candidate under every passage of its
    question (`sequence_scores`, the negated loss of `forward(labels=candidate,
    exclude_bos_score=True)`); "fast" ranks by `fast_scores`, where a candidate's own term is its beam
    score with the length normalisation undone (`sequences_scores` given: beam search) or, for
    greedy decoding, which keeps no score, its log-likelihood under its own passage.
    `score_candidates(plan, with_smooth)` is the framework's generator forward pass.
    """
    doc_scores = np.asarray(doc_scores)
    batch_size, n_docs = doc_scores.shape
    candidates = np.asarray(candidates)
    cands = candidates.reshape(batch_size, n_docs * num_beams, -1)
    same = same_sequences(cands)
    unique = first_occurrences(same) if do_deduplication else np.ones(same.shape[:2], dtype=bool)
    doc_logprobs = log_softmax(doc_scores, axis=1)
    if rescore == "fast":
        if sequences_scores is not None:
            own = beam_logprob_sums(sequences_scores, candidates, eos_token_ids, pad_token_id, length_penalty)
            own = own.reshape(unique.shape)
        else:
            plan = rescore_plan(cands, np.ones_like(unique), n_docs, pad_token_id, bos_token_id,
                                own_passage_only=True, num_beams=num_beams)
            token_logprobs, _ = score_candidates(plan, False)
            own = scatter_scores(plan, own_logliks(plan, token_logprobs), unique.shape)
        scores = fast_scores(own, doc_logprobs, same if do_deduplication else None, num_beams)
    else:
        plan = rescore_plan(cands, unique, n_docs, pad_token_id, bos_token_id)
        token_logprobs, smooth_logprobs = score_candidates(plan, bool(epsilon))
        values = sequence_scores(plan, token_logprobs, smooth_logprobs, doc_logprobs, vocab_size, epsilon)
        scores = scatter_scores(plan, values, unique.shape)
    scores = np.where(unique, scores, -np.inf)
    return select_top(cands, scores, num_return_sequences, pad_token_id)

"""RAG losses as tensor functions (a numpy twin of the same maths lives in the tests).

Shapes: B batch, N passages, T target length, V vocabulary. `seq_logits` are the generator's
`(B*N, T, V)` logits, `doc_scores` `(B, N)`, `labels` `(B, T)` what the model was fed as decoder
input; the target is `labels` shifted left by one with the pad id appended (`shift_targets_left`,
done inside the losses, as in rag_pt). Target pad positions contribute nothing.

Every function is graph-safe and XLA-safe: no Python branch depends on a tensor value (the
"all rows start with BOS" test of `exclude_bos_score` is a tensor condition folded into a weight).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf


def shift_targets_left(labels: tf.Tensor, pad_token_id: int) -> tf.Tensor:
    """`labels[:, 1:]` with `pad_token_id` appended: the token each decoder position predicts."""
    pad = tf.fill([tf.shape(labels)[0], 1], tf.cast(pad_token_id, labels.dtype))
    return tf.concat([labels[:, 1:], pad], axis=1)


def marginalize_token_logprobs(seq_logits: tf.Tensor, doc_scores: tf.Tensor, n_docs: int) -> tf.Tensor:
    """RAG-Token marginal `(B, T, V)`: logsumexp over passages of log p(y_t|z) + log p(z|x)."""
    seq_logprobs = tf.nn.log_softmax(seq_logits, axis=-1)
    shape = tf.shape(seq_logits)
    seq_logprobs = tf.reshape(seq_logprobs, [-1, n_docs, shape[1], shape[2]])
    doc_logprobs = tf.nn.log_softmax(tf.cast(doc_scores, seq_logprobs.dtype), axis=1)
    return tf.reduce_logsumexp(seq_logprobs + doc_logprobs[:, :, None, None], axis=1)


def _token_weights(target: tf.Tensor, pad_token_id: int, bos_token_id: Optional[int], exclude_bos_score: bool):
    """(weights for the token scores, weights for the smoothing term), both `(B, T)` float32."""
    not_pad = tf.cast(tf.not_equal(target, tf.cast(pad_token_id, target.dtype)), tf.float32)
    ll_weights = not_pad
    if exclude_bos_score and bos_token_id is not None:
        all_bos = tf.reduce_all(tf.equal(target[:, 0], tf.cast(bos_token_id, target.dtype)))
        first = tf.one_hot(0, tf.shape(target)[1], dtype=tf.float32)[None, :]
        ll_weights = ll_weights * (1.0 - first * tf.cast(all_bos, tf.float32))
    return ll_weights, not_pad


def _combine(nll, smooth_loss, epsilon: float, vocab_size, reduce_loss: bool):
    if reduce_loss:
        nll = tf.reduce_sum(nll)
        smooth_loss = None if smooth_loss is None else tf.reduce_sum(smooth_loss)
    if not epsilon:
        return nll
    return (1.0 - epsilon) * nll + (epsilon / tf.cast(vocab_size, nll.dtype)) * smooth_loss


def sequence_token_logprobs(seq_logits: tf.Tensor, target_rows: tf.Tensor, with_smooth: bool):
    """Per-position `log p(target)` and (optionally, else None) `sum_v log p(v)` for `(R, T, V)` logits,
    targets `(R, T)`; float32."""
    logits = tf.cast(seq_logits, tf.float32)
    normalizer = tf.reduce_logsumexp(logits, axis=-1)  # (R, T)
    token_lp = tf.gather(logits, target_rows, batch_dims=2) - normalizer
    if not with_smooth:
        return token_lp, None
    # sum_v log p(v) = sum_v logits - V * logsumexp(logits): no (R, T, V) log-softmax needed
    return token_lp, tf.reduce_sum(logits, axis=-1) - tf.cast(tf.shape(logits)[-1], tf.float32) * normalizer


def sequence_nll(
    seq_logits: tf.Tensor,
    doc_scores: tf.Tensor,
    labels: tf.Tensor,
    *,
    n_docs: int,
    pad_token_id: int,
    reduce_loss: bool = False,
    epsilon: float = 0.0,
    exclude_bos_score: bool = False,
    bos_token_id: Optional[int] = None,
) -> tf.Tensor:
    """RAG-Sequence NLL: `-logsumexp_n (sum_t log p(y_t|x,z_n,y_<t) + log p(z_n|x))`, `(B,)` or `()`.

    The passage log-prior is added explicitly per passage (not at a BOS position), so the loss is
    right for generators without BOS (T5) and for one-token targets.
    """
    target = shift_targets_left(labels, pad_token_id)
    logits = tf.cast(seq_logits, tf.float32)
    shape = tf.shape(logits)
    vocab = shape[2]
    logits = tf.reshape(logits, [-1, n_docs, shape[1], vocab])  # (B, N, T, V)
    normalizer = tf.reduce_logsumexp(logits, axis=-1)  # (B, N, T)
    target_n = tf.broadcast_to(target[:, None, :], tf.shape(normalizer))
    token_lp = tf.gather(logits, target_n, batch_dims=3) - normalizer  # (B, N, T)
    doc_lp = tf.nn.log_softmax(tf.cast(doc_scores, tf.float32), axis=1)  # (B, N)
    ll_w, smooth_w = _token_weights(target, pad_token_id, bos_token_id, exclude_bos_score)
    ll = tf.reduce_sum(token_lp * ll_w[:, None, :], axis=2) + doc_lp
    nll = -tf.reduce_logsumexp(ll, axis=1)
    smooth_loss = None
    if epsilon:
        # sum_v log p(v) = sum_v logits - V * logsumexp(logits): no (B, N, T, V) log-softmax needed
        token_smooth = tf.reduce_sum(logits, axis=-1) - tf.cast(vocab, tf.float32) * normalizer
        smooth = tf.reduce_sum(token_smooth * smooth_w[:, None, :], axis=2) + tf.cast(vocab, tf.float32) * doc_lp
        smooth_loss = -tf.reduce_logsumexp(smooth, axis=1)
    return _combine(nll, smooth_loss, epsilon, vocab, reduce_loss)


def token_nll(
    seq_logits: tf.Tensor,
    doc_scores: tf.Tensor,
    labels: tf.Tensor,
    *,
    n_docs: int,
    pad_token_id: int,
    reduce_loss: bool = False,
    epsilon: float = 0.0,
    exclude_bos_score: bool = False,
    bos_token_id: Optional[int] = None,
) -> tf.Tensor:
    """RAG-Token NLL: `-sum_t log sum_n p(z_n|x) p(y_t|x,z_n,y_<t)`, `(B,)` or `()`.

    Unlike transformers 4.x's TF RAG-Token, `reduce_loss` and `epsilon` (label smoothing) are
    honoured and the loss is per example unless reduced.
    """
    target = shift_targets_left(labels, pad_token_id)
    ll_w, smooth_w = _token_weights(target, pad_token_id, bos_token_id, exclude_bos_score)
    if not epsilon:
        # Only the target's marginal is needed: log p(y_t|z) for the target alone, then logsumexp over
        # passages on (B, N, T) - never the (B, T, V) marginal (the same maths, a fraction of the work).
        logits = tf.cast(seq_logits, tf.float32)
        shape = tf.shape(logits)
        logits = tf.reshape(logits, [-1, n_docs, shape[1], shape[2]])  # (B, N, T, V)
        normalizer = tf.reduce_logsumexp(logits, axis=-1)  # (B, N, T)
        target_n = tf.broadcast_to(target[:, None, :], tf.shape(normalizer))
        token_lp = tf.gather(logits, target_n, batch_dims=3) - normalizer  # (B, N, T)
        doc_lp = tf.nn.log_softmax(tf.cast(doc_scores, tf.float32), axis=1)  # (B, N)
        token_lp = tf.reduce_logsumexp(token_lp + doc_lp[:, :, None], axis=1)  # (B, T)
        return _combine(-tf.reduce_sum(token_lp * ll_w, axis=1), None, epsilon, shape[2], reduce_loss)
    marginal = marginalize_token_logprobs(tf.cast(seq_logits, tf.float32), doc_scores, n_docs)  # (B, T, V)
    vocab = tf.shape(marginal)[2]
    token_lp = tf.gather(marginal, target, batch_dims=2)  # (B, T)
    nll = -tf.reduce_sum(token_lp * ll_w, axis=1)
    smooth_loss = -tf.reduce_sum(tf.reduce_sum(marginal, axis=-1) * smooth_w, axis=1)
    return _combine(nll, smooth_loss, epsilon, vocab, reduce_loss)

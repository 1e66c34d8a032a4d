"""The TF loss functions against the numpy reference of the maths, every option, batch > 1."""

import numpy as np
import pytest
import tensorflow as tf

from rag_tf import losses
from tests.tf.support import np_loss

B, N, T, V, PAD, BOS = 3, 2, 5, 11, 1, 0


def _inputs(bos_first: bool):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((B * N, T, V)).astype(np.float32) * 2
    scores = rng.standard_normal((B, N)).astype(np.float32)
    labels = rng.integers(3, V, (B, T)).astype(np.int32)
    labels[:, 0] = 2
    if bos_first:
        labels[:, 1] = BOS
    labels[1, 3:] = PAD  # a shorter target
    return logits, scores, labels


@pytest.mark.parametrize("kind", ["token", "sequence"])
@pytest.mark.parametrize("eps,reduce,exclude_bos,bos_first", [
    (0.0, False, False, False),
    (0.1, False, False, True),
    (0.1, True, True, True),
    (0.0, False, True, False),  # exclude_bos asked for, but not every row starts with BOS: no effect
])
def test_loss_matches_numpy(kind, eps, reduce, exclude_bos, bos_first):
    logits, scores, labels = _inputs(bos_first)
    fn = losses.token_nll if kind == "token" else losses.sequence_nll
    got = fn(tf.constant(logits), tf.constant(scores), tf.constant(labels),
             n_docs=N, pad_token_id=PAD, bos_token_id=BOS, reduce_loss=reduce, epsilon=eps,
             exclude_bos_score=exclude_bos)
    want = np_loss(kind, logits, scores, labels, N, PAD, BOS, eps, reduce, exclude_bos)
    assert got.shape == (() if reduce else (B,))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-4)


def test_losses_trace_once_in_graph_with_dynamic_batch():
    logits, scores, labels = _inputs(True)

    @tf.function(input_signature=[tf.TensorSpec([None, T, V]), tf.TensorSpec([None, N]),
                                  tf.TensorSpec([None, T], tf.int32)])
    def both(lg, sc, lb):
        kw = dict(n_docs=N, pad_token_id=PAD, bos_token_id=BOS, epsilon=0.1, exclude_bos_score=True)
        return losses.token_nll(lg, sc, lb, **kw), losses.sequence_nll(lg, sc, lb, **kw)

    token, sequence = both(logits, scores, labels)
    np.testing.assert_allclose(token, np_loss("token", logits, scores, labels, N, PAD, BOS, 0.1, False, True),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sequence, np_loss("sequence", logits, scores, labels, N, PAD, BOS, 0.1, False, True),
                               rtol=1e-5, atol=1e-4)


def test_marginalize_is_a_distribution():
    logits, scores, _ = _inputs(False)
    marginal = losses.marginalize_token_logprobs(tf.constant(logits), tf.constant(scores), N)
    assert marginal.shape == (B, T, V)
    np.testing.assert_allclose(tf.reduce_logsumexp(marginal, -1).numpy(), 0.0, atol=1e-5)

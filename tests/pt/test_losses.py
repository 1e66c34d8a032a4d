"""The loss maths against numpy (the reference), and against the oracle where the oracle is right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag_core.arguments import INVALID_DOC_SCORE
from rag_pt import losses
from tests.pt import support

B, N, T, V, PAD, BOS = 3, 2, 5, 11, 1, 0


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    seq_logits = torch.randn(B * N, T, V, generator=g) * 3
    doc_scores = torch.randn(B, N, generator=g)
    labels = torch.randint(3, V, (B, T), generator=g)
    labels[:, 0] = 2  # decoder start, then BOS as first target
    labels[:, 1] = BOS
    labels[0, 3:] = PAD  # a padded row
    return seq_logits, doc_scores, labels


def test_marginalize_matches_numpy(batch):
    seq_logits, doc_scores, _ = batch
    got = losses.marginalize_token_logprobs(seq_logits, doc_scores, N)
    np.testing.assert_allclose(got.numpy(), support.np_marginalize(seq_logits.numpy(), doc_scores.numpy(), N), atol=1e-5)


@pytest.mark.parametrize("eps,reduce,exclude_bos", [(0.0, False, False), (0.1, True, False), (0.2, False, True)])
@pytest.mark.parametrize("kind", ["token", "sequence"])
def test_nll_matches_numpy(batch, kind, eps, reduce, exclude_bos):
    seq_logits, doc_scores, labels = batch
    fn, ref = (losses.token_nll, support.np_token_nll) if kind == "token" else (losses.sequence_nll, support.np_sequence_nll)
    got = fn(seq_logits, doc_scores, labels, n_docs=N, pad_token_id=PAD, reduce_loss=reduce, epsilon=eps,
             exclude_bos_score=exclude_bos, bos_token_id=BOS)
    want = ref(seq_logits, doc_scores, labels.numpy(), N, PAD, eps=eps, reduce=reduce, exclude_bos=exclude_bos, bos=BOS)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-5, atol=1e-4)
    if exclude_bos:  # the BOS score really was dropped
        kept = fn(seq_logits, doc_scores, labels, n_docs=N, pad_token_id=PAD, epsilon=eps, bos_token_id=BOS)
        assert (got < kept).all()


def test_sequence_nll_one_token_target_keeps_doc_logprob():
    """Defect of the original (documented in losses.sequence_nll): with a one-token target (position
    1 of the shifted target is padding) it drops log p(z|x). Ours follows the maths (numpy)."""
    g = torch.Generator().manual_seed(1)
    seq_logits, doc_scores = torch.randn(B * N, 2, V, generator=g), torch.randn(B, N, generator=g)
    labels = torch.tensor([[2, 5]] * B)  # decoder start + a single token: target [5, PAD]
    got = losses.sequence_nll(seq_logits, doc_scores, labels, n_docs=N, pad_token_id=PAD)
    want = support.np_sequence_nll(seq_logits, doc_scores, labels.numpy(), N, PAD)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    # what the original computes instead: no passage prior at all
    lp = support.np_log_softmax(seq_logits.numpy()).reshape(B, N, 2, V)[:, :, 0, 5]
    assert not np.allclose(want, -support.np_logsumexp(lp, axis=1), atol=1e-3)


@pytest.mark.parametrize("kind", ["token", "sequence"])
def test_empty_passage_slot_gets_zero_weight(batch, kind):
    """A slot the index could not fill (score INVALID_DOC_SCORE) changes nothing and makes no NaN."""
    seq_logits, doc_scores, labels = batch
    fn = losses.token_nll if kind == "token" else losses.sequence_nll
    one = fn(seq_logits.view(B, N, T, V)[:, :1].reshape(B, T, V), doc_scores[:, :1], labels, n_docs=1, pad_token_id=PAD, epsilon=0.1)
    masked = doc_scores.clone()
    masked[:, 1] = INVALID_DOC_SCORE
    two = fn(seq_logits, masked, labels, n_docs=N, pad_token_id=PAD, epsilon=0.1)
    np.testing.assert_allclose(two.numpy(), one.numpy(), rtol=1e-5)
    all_empty = torch.full_like(doc_scores, INVALID_DOC_SCORE)
    assert torch.isfinite(fn(seq_logits, all_empty, labels, n_docs=N, pad_token_id=PAD, epsilon=0.1)).all()


@pytest.mark.parametrize("combo", [("dpr", "bart"), ("dpr", "t5"), ("bert", "bart")])
@pytest.mark.parametrize("head", ["token", "sequence"])
def test_losses_match_oracle_with_context(pair, generator_tokenizers, head, combo):
    """Precomputed contexts, batch 2, label smoothing, reduced and not: logits and loss within 1e-5."""
    question_encoder, generator = combo
    ours, oracle, _ = pair(head, question_encoder, generator, retriever=False)
    tok = generator_tokenizers[generator]
    context = support.make_contexts(tok, batch_size=2, n_docs=3)
    labels = support.make_labels(tok, ["Moses is the brother", "Berlin"])
    for reduce_loss in (False, True):
        ours.config.label_smoothing = oracle.config.label_smoothing = 0.1
        try:
            mine = ours(**context, labels=labels, reduce_loss=reduce_loss)
            theirs = oracle(**context, labels=labels, reduce_loss=reduce_loss)
        finally:
            ours.config.label_smoothing = oracle.config.label_smoothing = 0.0
        np.testing.assert_allclose(mine.logits.detach().numpy(), theirs.logits.detach().numpy(), atol=1e-5)
        np.testing.assert_allclose(mine.loss.detach().numpy(), theirs.loss.detach().numpy(), rtol=1e-5, atol=1e-5)

"""PyTorch half precision as GPU users run RAG: `model.half()` / `model.to(torch.bfloat16)` and
`torch.autocast`, with a retriever and with empty retrieval slots (doc id -1), forward, loss and
generate, against the same weights in float32.

Tolerances per dtype are stated below with the differences measured on the tiny sharpened models;
float16 keeps 10 mantissa bits, bfloat16 7, so bfloat16 gets the wider bound.
"""

import copy

import numpy as np
import pytest
import torch

from tests.harness.retrieval import EmptySlots
from tests.pt import support

# largest |logit| difference to float32, and relative loss difference, allowed per dtype (measured:
# float16 0.013 and 7e-4, bfloat16 0.087 and 4.5e-3, on logits up to 5.5)
LOGITS_ATOL = {torch.float16: 0.03, torch.bfloat16: 0.2}
LOSS_RTOL = {torch.float16: 3e-3, torch.bfloat16: 2e-2}
DTYPES = [torch.float16, torch.bfloat16]
ANSWERS = ["Moses", "Berlin is the capital", "Shakespeare"]


@pytest.fixture(scope="module")
def reference(pair, tiny_retriever):
    """Factory: (float32 model, its half-precision copy) for a head, with `empty` slots emptied per row."""
    cache = {}

    def factory(head, dtype, empty=1):
        key = (head, dtype, empty)
        if key not in cache:
            ours, _, _ = pair(head, retriever=False)
            full = copy.deepcopy(ours).eval()
            full.set_retriever(EmptySlots(tiny_retriever("bart"), slots=empty))
            half = copy.deepcopy(full).to(dtype)
            half.set_retriever(full.retriever)
            cache[key] = full, half
        return cache[key]

    return factory


def _data(questions, generator_tokenizers):
    ids, mask = questions
    return {"input_ids": ids, "attention_mask": mask, "labels": support.make_labels(generator_tokenizers["bart"], ANSWERS)}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head", ["token", "sequence"])
def test_half_forward_and_loss_match_float32(reference, questions, generator_tokenizers, head, dtype):
    full, half = reference(head, dtype)
    data = _data(questions, generator_tokenizers)
    with torch.no_grad():
        want = full(**data, output_retrieved=True)
        got = half(**data, output_retrieved=True)
    assert np.all(support.numpy(got.retrieved_doc_ids)[:, -1] == -1)
    assert got.logits.dtype == dtype
    assert torch.isfinite(got.loss).all() and torch.isfinite(got.doc_scores).all()
    # the empty slot gets no probability in either dtype
    probs = torch.softmax(got.doc_scores.float(), dim=1)
    assert float(probs[:, -1].max()) == 0.0
    np.testing.assert_allclose(
        support.numpy(got.doc_scores.float())[:, :-1], support.numpy(want.doc_scores)[:, :-1], atol=0.05, rtol=0.02
    )
    np.testing.assert_allclose(support.numpy(got.logits.float()), support.numpy(want.logits), atol=LOGITS_ATOL[dtype])
    np.testing.assert_allclose(support.numpy(got.loss.float()), support.numpy(want.loss), rtol=LOSS_RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_half_with_every_slot_empty_is_finite(reference, questions, generator_tokenizers, dtype):
    _, half = reference("token", dtype, empty=3)
    with torch.no_grad():
        got = half(**_data(questions, generator_tokenizers))
    assert torch.isfinite(got.loss).all() and torch.isfinite(got.logits).all()


# how much worse (nats per sequence, under the float32 model) a half-precision greedy search may end
SEARCH_SLACK = {torch.float16: 0.1, torch.bfloat16: 0.5}
# largest relative difference of RAG-Sequence ranking scores for a candidate both dtypes return:
# a sum of ~30 token log-probs carries the dtype's relative rounding (float16 2^-11, bfloat16 2^-8),
# and "fast" reuses the beam scores, accumulated step by step in the dtype
SCORE_RTOL = {torch.float16: 1e-2, torch.bfloat16: 3e-2}


def _float32_nll(model, ids, mask, sequences):
    """Per-question NLL of `sequences` (decoder start token first) under the float32 `model`."""
    with torch.no_grad():
        return support.numpy(model(input_ids=ids, attention_mask=mask, labels=sequences[:, 1:], reduce_loss=False).loss)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head", ["token", "sequence"])
def test_half_greedy_is_as_good_as_float32(reference, questions, head, dtype):
    full, half = reference(head, dtype)
    ids, mask = questions
    want = full.generate(input_ids=ids, attention_mask=mask, max_length=8)
    got = half.generate(input_ids=ids, attention_mask=mask, max_length=8)
    assert got.shape[0] == want.shape[0] and got.dtype == torch.long
    if got.shape != want.shape or not bool((got == want).all()):  # a near tie flipped by rounding
        np.testing.assert_array_less(
            _float32_nll(full, ids, mask, got), _float32_nll(full, ids, mask, want) + SEARCH_SLACK[dtype]
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_half_token_beam_search_runs_with_empty_slots(reference, questions, dtype):
    full, half = reference("token", dtype)
    ids, mask = questions
    got = half.generate(input_ids=ids, attention_mask=mask, max_length=8, num_beams=2)
    assert got.shape[0] == ids.shape[0] and int(got.max()) < half.config.generator.vocab_size
    assert np.all(np.isfinite(_float32_nll(full, ids, mask, got)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rescore", ["thorough", "fast"])
def test_half_sequence_beam_scores_match_float32(reference, questions, dtype, rescore):
    """Beam search can take another path in half precision (a near tie in one passage's beam); the
    scores of the candidates both dtypes return must agree."""
    full, half = reference("sequence", dtype)
    ids, mask = questions
    kwargs = {"max_length": 8, "num_beams": 2, "num_return_sequences": 4, "output_provenance": True, "rescore": rescore}
    want = full.generate(input_ids=ids, attention_mask=mask, **kwargs)
    got = half.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert np.isfinite(support.numpy(got.sequences_scores)).all()
    want_scores = {tuple(s): v for s, v in zip(support.numpy(want.sequences).tolist(), support.numpy(want.sequences_scores))}
    common = 0
    for row, (seq, score) in enumerate(zip(support.numpy(got.sequences).tolist(), support.numpy(got.sequences_scores))):
        key = tuple(seq)
        # the same ids for another question are another candidate: compare within one question's block
        same_question = [tuple(s) for s in support.numpy(want.sequences)[row // 4 * 4:(row // 4 + 1) * 4].tolist()]
        if key in same_question:
            common += 1
            np.testing.assert_allclose(score, want_scores[key], rtol=SCORE_RTOL[dtype], err_msg=str(seq))
    assert common >= ids.shape[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autocast_training_step(reference, questions, generator_tokenizers, dtype):
    full, _ = reference("token", dtype)
    model = copy.deepcopy(full)  # eval mode: no dropout, so float32 is the reference
    model.set_retriever(full.retriever)
    data = _data(questions, generator_tokenizers)
    with torch.no_grad():
        want = full(**data)
    with torch.autocast("cpu", dtype=dtype):
        out = model(**data)
    # autocast runs the matmuls in `dtype`; BART's float32 logits bias brings the logits back to float32.
    # Rows of empty slots are left out: their passage (never used, probability 0) may differ.
    assert torch.isfinite(out.loss).all()
    used = np.arange(out.logits.shape[0]) % 3 != 2
    np.testing.assert_allclose(
        support.numpy(out.logits.float())[used], support.numpy(want.logits)[used], atol=LOGITS_ATOL[dtype]
    )
    np.testing.assert_allclose(support.numpy(out.loss.float()), support.numpy(want.loss), rtol=LOSS_RTOL[dtype])
    out.loss.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # gradients reach the question encoder through the doc scores
    assert any(float(p.grad.abs().max()) > 0 for p in model.rag.question_encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("loss", ["token_nll", "sequence_nll"])
def test_label_smoothed_losses_stay_finite_with_a_real_vocabulary(loss):
    """The smoothing term sums log-probs over the whole vocabulary: 50k of them leave float16's range
    unless accumulated in float32."""
    from rag_pt import losses

    gen = torch.Generator().manual_seed(0)
    n_docs, vocab = 2, 50_000
    logits = torch.randn(2 * n_docs, 4, vocab, generator=gen) * 3
    doc_scores = torch.tensor([[1.0, -2.0], [0.5, empty_score := -65504.0]])
    labels = torch.randint(3, vocab, (2, 4), generator=gen)
    fn = getattr(losses, loss)
    kwargs = {"n_docs": n_docs, "pad_token_id": 1, "epsilon": 0.1}
    want = fn(logits, doc_scores, labels, **kwargs)
    got = fn(logits.half(), doc_scores.half(), labels, **kwargs)
    assert empty_score == torch.finfo(torch.float16).min and torch.isfinite(got).all()
    np.testing.assert_allclose(support.numpy(got.float()), support.numpy(want), rtol=LOSS_RTOL[torch.float16])

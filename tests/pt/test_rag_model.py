"""`RagModel` / heads forward: parity with the oracle with a retriever, pooling, outputs, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag_core.arguments import INVALID_DOC_SCORE, RagInputError
from rag_pt import RagModel, retrieval_bridge
from tests.harness.configs import tiny_rag_config
from tests.pt import support


@pytest.mark.parametrize("generator", ["bart", "t5"])
@pytest.mark.parametrize("n_docs", [None, 2])
def test_forward_with_retriever_matches_oracle(pair, questions, generator_tokenizers, generator, n_docs):
    """Retrieval, doc scores, logits and loss on the same weights; batch 3, `n_docs` overridden."""
    ours, oracle, _ = pair("token", "dpr", generator)
    ids, mask = questions
    labels = support.make_labels(generator_tokenizers[generator], ["Moses", "Berlin is the capital", "Shakespeare"])
    mine = ours(input_ids=ids, attention_mask=mask, labels=labels, n_docs=n_docs, output_retrieved=True)
    theirs = oracle(input_ids=ids, attention_mask=mask, labels=labels, n_docs=n_docs, output_retrieved=True)
    assert mine.doc_scores.shape == (3, n_docs or 3)
    np.testing.assert_array_equal(mine.retrieved_doc_ids.numpy(), np.asarray(theirs.retrieved_doc_ids))
    np.testing.assert_allclose(mine.doc_scores.detach().numpy(), theirs.doc_scores.detach().numpy(), atol=1e-5)
    # the oracle pads contexts to max_combined_length, ours to the longest: compare the real tokens
    length = mine.context_input_ids.shape[1]
    np.testing.assert_array_equal(mine.context_input_ids.numpy(), theirs.context_input_ids[:, :length].numpy())
    np.testing.assert_allclose(mine.logits.detach().numpy(), theirs.logits.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(mine.loss.detach().numpy(), theirs.loss.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_rag_model_outputs(pair, questions):
    ours, _, config = pair("token", "dpr", "bart")
    model = ours.rag
    ids, mask = questions
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor([[2, 5]] * 3),
                output_retrieved=True, output_hidden_states=True, output_attentions=True)
    n = config.n_docs
    assert out.logits.shape == (3 * n, 2, config.generator.vocab_size)
    assert out.retrieved_doc_embeds.shape == (3, n, config.retrieval_vector_size)
    assert out.context_input_ids.shape[0] == 3 * n and out.context_attention_mask.shape == out.context_input_ids.shape
    assert out.question_encoder_last_hidden_state.shape == (3, config.retrieval_vector_size)
    assert len(out.question_enc_hidden_states) == config.question_encoder.num_hidden_layers + 1
    assert out.generator_dec_hidden_states is not None and out.generator_cross_attentions is not None
    quiet = model(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor([[2, 5]] * 3))
    assert quiet.context_input_ids is None and quiet.retrieved_doc_ids is None
    np.testing.assert_allclose(quiet.doc_scores.detach().numpy(), out.doc_scores.detach().numpy())


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_question_encoder_pooling(questions, pooling):
    config = tiny_rag_config("bert", "bart", question_encoder_pooling=pooling)
    model = RagModel(config).eval()
    ids, mask = questions
    out = model.question_encoder(ids, attention_mask=mask)
    want = {
        "cls": out.last_hidden_state[:, 0],
        "mean": (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True),
        "pooler": out.pooler_output,
    }[pooling]
    np.testing.assert_allclose(model.encode_question(ids, mask).detach().numpy(), want.detach().numpy(), atol=1e-6)


def test_score_documents_masks_empty_slots():
    q, d = torch.randn(2, 4), torch.randn(2, 3, 4)
    ids = torch.tensor([[5, -1, 7], [1, 2, -1]])
    scores = retrieval_bridge.score_documents(q, d, ids)
    np.testing.assert_allclose(scores[ids >= 0].numpy(), torch.einsum("bd,bnd->bn", q, d)[ids >= 0].numpy(), rtol=1e-6)
    assert (scores[ids < 0] == INVALID_DOC_SCORE).all()
    assert torch.isfinite(torch.log_softmax(scores, 1)).all()


# === Bad input ===
@pytest.fixture(scope="module")
def bare(generator_tokenizers):
    """A RAG-Token model with no retriever, and valid contexts for batch 2 x 3 passages."""
    from rag_pt import RagTokenForGeneration

    torch.manual_seed(0)
    model = RagTokenForGeneration(tiny_rag_config("dpr", "bart")).eval()
    return model, support.make_contexts(generator_tokenizers["bart"], 2, 3)


def test_no_retriever_and_no_context(bare, questions):
    model, _ = bare
    with pytest.raises(RagInputError, match="no retriever"):
        model(input_ids=questions[0], labels=torch.tensor([[2, 5]] * 3))
    with pytest.raises(RagInputError, match="no retriever"):
        model.generate(input_ids=questions[0])


def test_context_rows_not_batch_times_n_docs(bare):
    model, ctx = bare
    with pytest.raises(RagInputError, match="rows"):
        model(context_input_ids=ctx["context_input_ids"][:5], context_attention_mask=ctx["context_attention_mask"][:5],
              doc_scores=ctx["doc_scores"], decoder_input_ids=torch.tensor([[2]] * 2))


def test_doc_scores_wrong_shape(bare):
    model, ctx = bare
    with pytest.raises(RagInputError, match="doc_scores"):
        model(**{**ctx, "doc_scores": ctx["doc_scores"].reshape(-1)}, decoder_input_ids=torch.tensor([[2]] * 2))
    with pytest.raises(RagInputError, match="rows"):
        model(**{**ctx, "doc_scores": ctx["doc_scores"][:, :2]}, decoder_input_ids=torch.tensor([[2]] * 2))


def test_n_docs_disagrees_with_tensors(bare):
    model, ctx = bare
    with pytest.raises(RagInputError, match="n_docs=2"):
        model(**ctx, n_docs=2, decoder_input_ids=torch.tensor([[2]] * 2))
    with pytest.raises(RagInputError, match="n_docs=2"):
        model.generate(**ctx, n_docs=2)


def test_labels_longer_than_generator_positions(bare, generator_tokenizers):
    model, ctx = bare
    too_long = torch.full((2, model.config.generator.max_position_embeddings + 1), 5)
    with pytest.raises(RagInputError, match="positions"):
        model(**ctx, labels=too_long)
    # T5 has relative positions: no limit from the model
    from rag_pt import RagSequenceForGeneration

    t5 = RagSequenceForGeneration(tiny_rag_config("dpr", "t5")).eval()
    t5_ctx = support.make_contexts(generator_tokenizers["t5"], 2, 3)
    out = t5(**t5_ctx, labels=torch.full((2, 200), 5))
    assert out.loss.shape == (2,)

"""Gradients: into the question encoder through doc_scores, and into a context encoder set for training."""

from __future__ import annotations

import pytest
import torch

from rag_pt import RagSequenceForGeneration, RagTokenForGeneration
from tests.harness.configs import tiny_dpr_config, tiny_rag_config
from tests.harness.retrieval import tiny_index_paths
from tests.pt import support


@pytest.mark.parametrize("cls", [RagTokenForGeneration, RagSequenceForGeneration])
def test_gradients_reach_question_encoder(cls, tiny_retriever, questions, generator_tokenizers):
    torch.manual_seed(0)
    model = cls(tiny_rag_config("dpr", "bart"), retriever=tiny_retriever("bart", "dpr")).train()
    ids, mask = questions
    labels = support.make_labels(generator_tokenizers["bart"], ["Moses", "Berlin", "Shakespeare"])
    model(input_ids=ids, attention_mask=mask, labels=labels, reduce_loss=True).loss.backward()
    grads = [p.grad for p in model.question_encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.generator.lm_head.weight.grad.abs().sum() > 0


def test_context_encoder_training(tiny_passages_dir, question_encoder_tokenizer, generator_tokenizers, questions):
    from transformers import DPRContextEncoder

    from tests.harness.retrieval import make_tiny_retriever

    config = tiny_rag_config("dpr", "bart", **tiny_index_paths(tiny_passages_dir))
    retriever = make_tiny_retriever(config, question_encoder_tokenizer, generator_tokenizers["bart"])
    retriever.set_ctx_encoder_tokenizer(question_encoder_tokenizer)
    torch.manual_seed(0)
    model = RagTokenForGeneration(config, retriever=retriever).eval()  # eval: no dropout, comparable scores
    ctx_encoder = DPRContextEncoder(tiny_dpr_config()).eval()
    model.set_context_encoder_for_training(ctx_encoder)
    ids, mask = questions
    labels = support.make_labels(generator_tokenizers["bart"], ["Moses", "Berlin", "Shakespeare"])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, reduce_loss=True, output_retrieved=True)
    # doc scores now come from the trainable encoder, not the index's stored vectors
    q = model.rag.encode_question(ids, mask)
    tokenized = retriever(ids.numpy(), q.detach().numpy(), return_tensors="np")
    vectors = ctx_encoder(torch.as_tensor(tokenized["tokenized_doc_ids"]),
                          attention_mask=torch.as_tensor(tokenized["tokenized_doc_attention_mask"])).pooler_output
    torch.testing.assert_close(out.doc_scores, torch.einsum("bd,bnd->bn", q, vectors.view(3, config.n_docs, -1)))
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ctx_encoder.parameters())

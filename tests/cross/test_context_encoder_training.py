"""End-to-end retriever training: both frameworks pool the trainable context encoder's output the way
the configuration says (a BERT context encoder under `question_encoder_pooling="mean"` is mean-pooled,
not read from its pooler) and give the same loss and the same gradients for its weights."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cross.support import numpy, to_pt, to_tf
from tests.cross.tolerances import LARGEST, TOLERANCES, assert_close


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_context_encoder_gradients_agree(tmp_path, question_encoder_tokenizer, bart_tokenizer, pooling):
    import tensorflow as tf
    import torch
    from transformers import BertModel

    import rag_pt
    import rag_tf
    from rag_tf.models import registry
    from rag_tf.models.weights import load_pt_weights
    from tests.cross import support
    from tests.harness.configs import tiny_bert_config, tiny_rag_config
    from tests.harness.retrieval import make_tiny_retriever, tiny_index_paths, write_tiny_passages

    kb = write_tiny_passages(tmp_path / "kb")
    config = tiny_rag_config("bert", "bart", question_encoder_pooling=pooling, **tiny_index_paths(kb))
    # peaked generator: the passages' likelihoods differ, so d loss / d doc_scores is well above float noise
    support.sharpen(config)
    torch.manual_seed(0)
    pt_model = rag_pt.RagTokenForGeneration(config).eval()
    pt_model.save_pretrained(tmp_path / "pt")
    tf_model = rag_tf.TFRagTokenForGeneration.from_pretrained(tmp_path / "pt")
    retriever = make_tiny_retriever(config, question_encoder_tokenizer, bart_tokenizer)
    retriever.set_ctx_encoder_tokenizer(question_encoder_tokenizer)
    pt_ctx = BertModel(tiny_bert_config()).eval()  # with a pooler: "mean" / "cls" must not read it
    tf_ctx = registry.build_context_encoder(pt_ctx.config)
    tf_ctx.ensure_built()
    assert load_pt_weights(tf_ctx, {k: v.detach().numpy() for k, v in pt_ctx.state_dict().items()}) == []
    for model, ctx in ((pt_model, pt_ctx), (tf_model, tf_ctx)):
        model.set_retriever(retriever)
        model.set_context_encoder_for_training(ctx)

    inputs = dict(support.questions(question_encoder_tokenizer), labels=support.labels(bart_tokenizer))
    pt_out = pt_model(**to_pt(inputs), reduce_loss=True, output_retrieved=True)
    pt_out.loss.backward()
    with tf.GradientTape() as tape:
        tf_out = tf_model(**to_tf(inputs), reduce_loss=True, output_retrieved=True, training=False)
    rows = tf_ctx.pt_weight_table()
    tf_grads = tape.gradient(tf_out.loss, [row.variable for row in rows])

    # the passage vectors (returned as retrieved_doc_embeds) are the configured pooling of the context encoder
    tokenized = retriever(inputs["input_ids"], numpy(pt_out.question_encoder_last_hidden_state), return_tensors="np")
    ids, mask = (torch.from_numpy(tokenized[k]) for k in ("tokenized_doc_ids", "tokenized_doc_attention_mask"))
    with torch.no_grad():
        hidden = pt_ctx(ids, attention_mask=mask).last_hidden_state.numpy()
    mask = mask.numpy()[:, :, None]
    want = (hidden * mask).sum(1) / mask.sum(1) if pooling == "mean" else hidden[:, 0]
    assert_close("doc_scores", numpy(pt_out.retrieved_doc_embeds).reshape(want.shape), want, f"PT {pooling}")
    assert_close("doc_scores", numpy(tf_out.retrieved_doc_embeds), numpy(pt_out.retrieved_doc_embeds), pooling)
    assert_close("doc_scores", numpy(tf_out.doc_scores), numpy(pt_out.doc_scores), pooling)
    assert_close("loss", numpy(tf_out.loss), numpy(pt_out.loss), pooling)
    pt_grads = {name: p.grad.numpy().copy() for name, p in pt_ctx.named_parameters() if p.grad is not None}
    assert "pooler.dense.weight" not in pt_grads  # neither pooling reads the pooler

    # the reference: PyTorch in float64. Some of these gradients are sums that cancel (under cls pooling the
    # [CLS] embedding's: d loss / d doc_scores sums to zero over a question's passages, and [CLS] enters every
    # passage alike), so float32 is off by up to a few percent there in either framework; TF must be as close
    # to float64 as PyTorch's own float32 is
    pt_model.double(), pt_ctx.zero_grad(), pt_ctx.double()
    pt_model(**to_pt(inputs), reduce_loss=True).loss.backward()
    exact = {name: p.grad.numpy() for name, p in pt_ctx.named_parameters() if p.grad is not None}
    largest = max(np.abs(g).max() for g in exact.values())
    tol = TOLERANCES["gradients"]
    compared = 0
    for row, grad in zip(rows, tf_grads):
        if row.pt_name not in pt_grads:
            assert grad is None, f"{row.pt_name}: a gradient in TF only"
            continue
        value = numpy(tf.convert_to_tensor(grad))
        value = value.T if row.transform == "transpose" else value
        # floored at 1% of the largest gradient: some are zero in exact arithmetic (a key bias; softmax
        # ignores a shift) and float noise in both frameworks
        scale = max(np.abs(exact[row.pt_name]).max(), 1e-2 * largest)
        bound = tol.rtol * np.abs(pt_grads[row.pt_name] - exact[row.pt_name]) + tol.atol * scale
        np.testing.assert_array_less(np.abs(value - exact[row.pt_name]), bound + 1e-30, f"{pooling} {row.pt_name}")
        LARGEST["gradients"] = max(LARGEST.get("gradients", 0.0), float(np.abs(value - pt_grads[row.pt_name]).max()))
        compared += 1
    assert compared > 10  # the encoder's layers, not only its embeddings

"""T5 generators (which transformers' TF RAG could not build), bad input and save/load. (That rag_tf
never imports torch: tests/core/test_boundaries.py.)"""


import numpy as np
import pytest
import tensorflow as tf

from rag_core import RagInputError
from tests.tf import support


@pytest.fixture(scope="module")
def t5_model():
    return support.build_ours(support.make_config("dpr", "t5"), "token")


@pytest.fixture(scope="module")
def t5_contexts(t5_tokenizer):
    return {k: tf.constant(v) for k, v in support.make_contexts(t5_tokenizer, batch_size=2, n_docs=3).items()}


def test_t5_forward_loss_follows_the_maths(t5_model, t5_contexts, t5_tokenizer):
    labels = support.make_labels(t5_tokenizer, ["Berlin", "Paris is the capital"])
    out = t5_model(**t5_contexts, labels=tf.constant(labels))
    assert out.logits.shape[:2] == (6, labels.shape[1])
    want = support.np_loss("token", out.logits.numpy(), out.doc_scores.numpy(), labels, n_docs=3, pad=0)
    np.testing.assert_allclose(out.loss.numpy(), want, rtol=1e-5, atol=1e-4)
    seq = support.ours_class("sequence")(t5_model.config)
    seq.ensure_built()
    seq.set_weights(t5_model.get_weights())
    got = seq(**t5_contexts, labels=tf.constant(labels))
    want = support.np_loss("sequence", got.logits.numpy(), got.doc_scores.numpy(), labels, n_docs=3, pad=0)
    np.testing.assert_allclose(got.loss.numpy(), want, rtol=1e-5, atol=1e-4)
    ids = seq.generate(**t5_contexts, num_beams=2, max_length=8)
    assert ids.shape[0] == 2 and ids.numpy()[:, 0].tolist() == [0, 0]  # T5 starts from pad


def test_t5_generate_xla_equals_graph_and_save_load_round_trip(t5_model, t5_contexts, tmp_path):
    graph = t5_model.generate(**t5_contexts, num_beams=2, max_length=8)
    xla = t5_model.generate(**t5_contexts, num_beams=2, max_length=8, jit_compile=True)
    np.testing.assert_array_equal(xla.numpy(), graph.numpy())
    t5_model.save_pretrained(str(tmp_path))
    loaded = support.ours_class("token").from_pretrained(str(tmp_path))
    assert sorted(loaded.pt_weights()) == sorted(t5_model.pt_weights())
    np.testing.assert_array_equal(loaded.generate(**t5_contexts, num_beams=2, max_length=8).numpy(), graph.numpy())


def test_bad_input_gets_clear_errors_at_trace_time(token_pair, bart_contexts):
    model = token_pair[0]
    ctx = {k: tf.constant(v) for k, v in bart_contexts.items()}
    with pytest.raises(RagInputError, match="no retriever"):
        model(input_ids=tf.constant([[5, 6]]), decoder_input_ids=tf.constant([[2, 5]]))
    with pytest.raises(RagInputError, match="rows"):
        model(**dict(ctx, context_input_ids=ctx["context_input_ids"][:5],
                     context_attention_mask=ctx["context_attention_mask"][:5]), decoder_input_ids=tf.constant([[2]] * 2))
    with pytest.raises(RagInputError, match="n_docs=2 disagrees"):
        model(**ctx, n_docs=2, decoder_input_ids=tf.constant([[2]] * 2))
    with pytest.raises(RagInputError, match="at most 128"):
        model(**ctx, labels=tf.ones([2, 200], tf.int32))
    with pytest.raises(RagInputError, match="no retriever"):
        model.generate(input_ids=tf.constant([[5, 6]]))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, 4], tf.float32)])
    def traced(context_input_ids, doc_scores):  # doc_scores holds 4 passages, the config 3: n_docs=3 explicit
        return model(context_input_ids=context_input_ids, context_attention_mask=context_input_ids,
                     doc_scores=doc_scores, n_docs=3, decoder_input_ids=context_input_ids[:, :1]).logits

    # raised while tracing, before any data, as the library's own class (not autograph's StagingError)
    with pytest.raises(RagInputError, match="n_docs=3 disagrees with `doc_scores`"):
        traced.get_concrete_function()


def test_unsupported_generation_options_are_refused(token_pair, bart_contexts):
    ctx = {k: tf.constant(v) for k, v in bart_contexts.items()}
    with pytest.raises(NotImplementedError, match="penalty_alpha"):
        token_pair[0].generate(**ctx, penalty_alpha=0.6, top_k=4)
    with pytest.raises(NotImplementedError, match="beam sampling"):
        token_pair[0].generate(**ctx, do_sample=True, num_beams=2)

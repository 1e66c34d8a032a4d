"""Graph mode: `call` with retrieval inside `tf.function`, Keras fit/evaluate/predict (no
run_eagerly), gradients to the question encoder, XLA decoding, the cached eager graph."""

import numpy as np
import pytest
import tensorflow as tf

from rag_core.arguments import INVALID_DOC_SCORE
from rag_core.outputs import RetrievAugLMMarginOutput
from tests.tf import support


def test_call_with_retrieval_inside_tf_function(tiny_retriever, data):
    retriever = tiny_retriever("bart")
    model = support.build_ours(support.make_config(), "sequence", retriever=support.EmptySlots(retriever, slots=1))

    @tf.function
    def forward(input_ids, attention_mask, labels):
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_retrieved=True)

    out = forward(data["input_ids"], data["attention_mask"], data["labels"])
    assert isinstance(out, RetrievAugLMMarginOutput)
    assert out.context_input_ids.shape[0] == 4 * 3 and out.loss.shape == (4,)
    # doc scores are the inner products of question and passage vectors; the empty slot is masked
    q = out.question_encoder_last_hidden_state.numpy()
    embeds = out.retrieved_doc_embeds.numpy()
    expected = np.einsum("bd,bnd->bn", q, embeds)
    expected[:, -1] = INVALID_DOC_SCORE
    np.testing.assert_allclose(out.doc_scores.numpy(), expected, rtol=1e-5, atol=1e-4)
    assert np.all(out.retrieved_doc_ids.numpy()[:, -1] == -1) and np.isfinite(out.loss.numpy()).all()
    eager = model(**data)
    np.testing.assert_allclose(eager.loss.numpy(), out.loss.numpy(), rtol=1e-5)


def test_gradients_reach_the_question_encoder(tiny_retriever, data):
    model = support.build_ours(support.make_config(), "token", retriever=tiny_retriever("bart"))

    @tf.function
    def grads(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(**batch, training=True).loss)
        return tape.gradient(loss, model.question_encoder.trainable_variables)

    norms = [float(tf.norm(g)) for g in grads(data) if g is not None]
    assert norms and max(norms) > 0.0


@pytest.mark.parametrize("head", ["token", "sequence"])
def test_keras_fit_evaluate_predict_in_graph_mode(head, tiny_retriever, data):
    model = support.build_ours(support.make_config(), head, retriever=tiny_retriever("bart"))
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3))
    assert not model.run_eagerly
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(2)
    history = model.fit(dataset, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] * 0.9, losses
    evaluated = model.evaluate(dataset, verbose=0, return_dict=True)
    assert np.isfinite(evaluated["loss"]) and evaluated["loss"] < losses[0]
    predicted = model.predict(dataset.map(lambda b: {k: b[k] for k in ("input_ids", "attention_mask")}), verbose=0)
    assert predicted["doc_scores"].shape == (4, 3)


def test_compile_with_a_loss_is_refused():
    model = support.build_ours(support.make_config(), "token")
    with pytest.raises(ValueError, match="compile without"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(num_beams=1, max_length=10), marks=pytest.mark.slow),  # one more XLA compile (~30 s)
    dict(num_beams=3, max_length=10, no_repeat_ngram_size=2),
])
def test_xla_token_generate_equals_graph(kwargs, token_pair, bart_contexts):
    ours = token_pair[0]
    ctx = {k: tf.constant(v) for k, v in bart_contexts.items()}
    graph = ours.generate(**ctx, **kwargs)
    xla = ours.generate(**ctx, jit_compile=True, **kwargs)
    np.testing.assert_array_equal(xla.numpy(), graph.numpy())


def test_repeated_eager_call_runs_as_cached_graph_with_the_same_results(tiny_retriever, data):
    """The second eager call with the same options runs the maths after retrieval as one cached graph:
    same loss, logits, retrieved fields and question-encoder gradients as the op-by-op first call."""
    model = support.build_ours(support.make_config(), "token", retriever=tiny_retriever("bart"))
    batch = {k: tf.constant(v) for k, v in data.items()}

    def run():
        with tf.GradientTape() as tape:
            out = model(**batch, output_retrieved=True, exclude_bos_score=True)
            loss = tf.reduce_sum(out.loss)
        return out, tape.gradient(loss, model.question_encoder.trainable_variables)

    eager, eager_grads = run()
    assert "_rag_call_function" not in model.__dict__  # a one-off call pays no tracing
    graph, graph_grads = run()
    assert model.__dict__["_rag_call_function"].experimental_get_tracing_count() == 1
    for key in ("loss", "logits", "doc_scores", "question_encoder_last_hidden_state", "retrieved_doc_embeds"):
        np.testing.assert_allclose(graph[key].numpy(), eager[key].numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(graph.context_input_ids.numpy(), eager.context_input_ids.numpy())
    for g_eager, g_graph in zip(eager_grads, graph_grads):
        if g_eager is not None:
            np.testing.assert_allclose(tf.convert_to_tensor(g_graph).numpy(), tf.convert_to_tensor(g_eager).numpy(),
                                       rtol=1e-4, atol=1e-6)
    model.config.label_smoothing = 0.1  # a config change retraces rather than reusing a stale graph
    try:
        smoothed = model(**batch, output_retrieved=True, exclude_bos_score=True)
        smoothed = model(**batch, output_retrieved=True, exclude_bos_score=True)
    finally:
        model.config.label_smoothing = 0.0
    assert model.__dict__["_rag_call_function"].experimental_get_tracing_count() == 2
    assert not np.allclose(smoothed.loss.numpy(), graph.loss.numpy())
    model.run_eagerly = True  # Keras' switch: op by op
    model(**batch, output_retrieved=True, exclude_bos_score=True)
    assert model.__dict__["_rag_call_function"].experimental_get_tracing_count() == 2

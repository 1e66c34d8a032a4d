"""Keras 3 as TensorFlow users have it: callbacks that save `.weights.h5` and stop early, the
`mixed_bfloat16` / `mixed_float16` policies (with a retriever and with empty slots), and
`model.export` of the forward pass."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.tf import support

# largest |logit| difference to float32 allowed per policy (logits of the tiny sharpened model reach ~10)
POLICY_ATOL = {"mixed_bfloat16": 0.5, "mixed_float16": 0.05}


def test_model_checkpoint_weights_h5_and_early_stopping(tiny_retriever, data, tmp_path):
    model = support.build_ours(support.make_config(), "token", retriever=tiny_retriever("bart"))
    model.compile(optimizer=keras.optimizers.AdamW(3e-3))
    path = str(tmp_path / "best.weights.h5")
    history = model.fit(
        tf.data.Dataset.from_tensor_slices(data).batch(2), epochs=6, verbose=0,
        callbacks=[keras.callbacks.ModelCheckpoint(path, monitor="loss", save_weights_only=True, save_best_only=True),
                   keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=10.0)],
    )
    assert len(history.history["loss"]) == 2  # min_delta 10: no epoch improves enough, stops after patience
    fresh = support.build_ours(support.make_config(), "token", retriever=tiny_retriever("bart"), seed=1)
    before = fresh(**data).loss.numpy()
    fresh.load_weights(path)
    reference = support.build_ours(support.make_config(), "token", retriever=tiny_retriever("bart"), seed=1)
    reference.load_weights(path)
    np.testing.assert_allclose(fresh(**data).loss.numpy(), reference(**data).loss.numpy(), rtol=1e-6)
    assert not np.allclose(fresh(**data).loss.numpy(), before)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_forward_loss_generate_and_fit(policy, tiny_retriever, data):
    holey = support.EmptySlots(tiny_retriever("bart"), slots=2)
    reference = support.build_ours(support.make_config(), "token", retriever=holey)
    want = reference(**data, output_retrieved=True)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = support.build_ours(support.make_config(), "token", retriever=holey)
        model.load_pt_weights(reference.pt_weights())
        got = model(**data, output_retrieved=True)
        assert np.all(got.retrieved_doc_ids.numpy()[:, 1:] == -1)
        assert got.doc_scores.dtype == tf.float32 and np.isfinite(got.loss.numpy()).all()
        np.testing.assert_allclose(got.doc_scores.numpy()[:, 0], want.doc_scores.numpy()[:, 0], atol=0.05, rtol=0.02)
        np.testing.assert_allclose(got.logits.numpy(), want.logits.numpy(), atol=POLICY_ATOL[policy])
        np.testing.assert_allclose(got.loss.numpy(), want.loss.numpy(), rtol=0.05)
        assert model.generate(input_ids=data["input_ids"], attention_mask=data["attention_mask"],
                              max_length=6).shape[0] == 4
        if policy == "mixed_bfloat16":  # one training run is enough: the same graph, another dtype
            model.compile(optimizer=keras.optimizers.Adam(1e-3))
            history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(4), epochs=1, verbose=0)
            assert np.isfinite(history.history["loss"]).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_export_of_the_forward_pass_reloads_with_the_same_logits(token_pair, bart_contexts, bart_labels, tmp_path):
    model = token_pair[0]
    spec = tf.TensorSpec([None, None], tf.int32)
    model.export(str(tmp_path / "exported"), format="tf_saved_model", input_signature=[{
        "context_input_ids": spec, "context_attention_mask": spec,
        "doc_scores": tf.TensorSpec([None, None], tf.float32), "decoder_input_ids": spec}])
    reloaded = tf.saved_model.load(str(tmp_path / "exported"))
    args = {k: tf.constant(v) for k, v in dict(bart_contexts, decoder_input_ids=bart_labels).items()}
    got = reloaded.serve(args)
    want = model(**args, use_cache=False)
    np.testing.assert_allclose(got["logits"].numpy(), want.logits.numpy(), atol=1e-5)

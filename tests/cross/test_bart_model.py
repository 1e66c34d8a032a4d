"""rag_tf's Keras BART against transformers' PyTorch `BartForConditionalGeneration` on the same
weights: encoder, full forward with padding on both sides, incremental decoding with
`past_key_values`, the static-cache `decode_step` (eager and XLA), weight names and round trip,
gradients, and bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
from safetensors.numpy import load_file
from transformers import BartConfig, BartForConditionalGeneration
from transformers.activations import ACT2FN

import keras
from rag_tf.models.bart import ACTIVATIONS, BartAttention, BartDecoderLayer, TFBartForConditionalGeneration
from rag_tf.models.outputs import EncoderOutput
from rag_tf.models.weights import SubModelWeightError, load_pt_weights, pt_weights

ATOL = 1e-5  # float32 on CPU, same maths in a different kernel order
# bfloat16 keeps 8 mantissa bits: each op rounds at ~4e-3 relative; through 2 + 3 layers the logits
# (|logits| up to ~5 with init_std 0.3) drift by a few 1e-2. The bound is 5% of the largest logit.
BF16_RELATIVE_TO_MAX = 5e-2
PAD = 1

INPUT_IDS = np.array([[0, 5, 6, 7, 8, 9, 2], [0, 10, 11, 2, PAD, PAD, PAD]], dtype=np.int32)
DECODER_IDS = np.array([[2, 0, 12, 13, 14, 15], [2, 0, 16, 17, PAD, PAD]], dtype=np.int32)
ATTENTION_MASK = (INPUT_IDS != PAD).astype(np.int32)
DECODER_MASK = (DECODER_IDS != PAD).astype(np.int32)


def tiny_config(**overrides) -> BartConfig:
    fields = dict(vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=24, max_position_embeddings=64,
                  pad_token_id=PAD, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                  init_std=0.3, attn_implementation="eager")  # eager: attention weights are returned
    fields.update(overrides)
    return BartConfig(**fields)


def build_pair(**overrides):
    """(pt_model, tf_model, state_dict as numpy), seeded; final_logits_bias made non-zero."""
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    pt_model = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        pt_model.final_logits_bias.normal_()
    state = {k: v.numpy() for k, v in pt_model.state_dict().items()}
    tf_model = TFBartForConditionalGeneration(config)
    assert load_pt_weights(tf_model, state) == []
    return pt_model, tf_model, state


@pytest.fixture(scope="module", params=[{}, {"scale_embedding": True, "activation_function": "gelu_new"}],
                ids=["plain", "scaled-gelu_new"])
def pair(request):
    return build_pair(**request.param)


def pt_forward(pt_model, **inputs):
    with torch.no_grad():
        return pt_model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()},
                        output_attentions=True, output_hidden_states=True)


def close(actual, desired, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), atol=atol, rtol=0)


def full_inputs():
    return dict(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, decoder_input_ids=DECODER_IDS,
                decoder_attention_mask=DECODER_MASK)


# === Numerics against PyTorch ===
def test_encoder_with_padding_matches_pytorch(pair):
    pt_model, tf_model, _ = pair
    with torch.no_grad():
        ref = pt_model.get_encoder()(input_ids=torch.from_numpy(INPUT_IDS.astype(np.int64)),
                                     attention_mask=torch.from_numpy(ATTENTION_MASK.astype(np.int64)),
                                     output_attentions=True, output_hidden_states=True)
    out = tf_model.get_encoder()(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK,
                                 output_attentions=True, output_hidden_states=True)
    assert isinstance(out, EncoderOutput)
    close(out.last_hidden_state, ref.last_hidden_state)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states + out.attentions, ref.hidden_states + ref.attentions):
        close(ours, theirs)


def test_forward_with_padding_on_both_sides_matches_pytorch(pair):
    pt_model, tf_model, _ = pair
    ref = pt_forward(pt_model, **full_inputs())
    out = tf_model(**full_inputs(), output_attentions=True, output_hidden_states=True)
    assert out.logits.dtype == tf.float32 and tuple(out.logits.shape) == (2, 6, 99)
    close(out.logits, ref.logits)
    close(out.encoder_last_hidden_state, ref.encoder_last_hidden_state)
    for name in ("decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_hidden_states",
                 "encoder_attentions"):
        assert len(out[name]) == len(ref[name]), name
        for ours, theirs in zip(out[name], ref[name]):
            close(ours, theirs)


def test_given_encoder_outputs_skip_the_encoder(pair):
    _, tf_model, _ = pair
    expected = tf_model(**full_inputs()).logits
    hidden = tf_model.get_encoder()(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).last_hidden_state
    for given in (EncoderOutput(last_hidden_state=hidden), {"last_hidden_state": hidden}, (hidden,)):
        out = tf_model(attention_mask=ATTENTION_MASK, decoder_input_ids=DECODER_IDS,
                       decoder_attention_mask=DECODER_MASK, encoder_outputs=given)
        close(out.logits, expected)


def test_incremental_decoding_with_past_matches_full_forward(pair):
    pt_model, tf_model, _ = pair
    ref = pt_forward(pt_model, **full_inputs()).logits.numpy()
    first = tf_model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, decoder_input_ids=DECODER_IDS[:, :2],
                     decoder_attention_mask=DECODER_MASK[:, :2], use_cache=True)
    logits, past = [first.logits.numpy()], first.past_key_values
    for t in range(2, DECODER_IDS.shape[1]):  # one token at a time; the mask covers past + new
        step = tf_model(attention_mask=ATTENTION_MASK, encoder_outputs=(first.encoder_last_hidden_state,),
                        decoder_input_ids=DECODER_IDS[:, t:t + 1], decoder_attention_mask=DECODER_MASK[:, :t + 1],
                        past_key_values=past, use_cache=True)
        logits.append(step.logits.numpy())
        past = step.past_key_values
    assert len(past) == 3 and all(len(layer) == 4 for layer in past)
    assert tuple(past[0][0].shape) == (2, 2, DECODER_IDS.shape[1], 8)  # (B, heads, length, head_dim)
    assert tuple(past[0][2].shape) == (2, 2, INPUT_IDS.shape[1], 8)
    close(np.concatenate(logits, axis=1), ref)


def check_decode_steps(pt_model, tf_model, step):
    """`step` (decode_step, eager or compiled) over a static cache equals PyTorch's full forward."""
    # Without a decoder mask: the static cache attends to every written slot.
    ref = pt_forward(pt_model, input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK,
                     decoder_input_ids=DECODER_IDS).logits.numpy()
    max_length = DECODER_IDS.shape[1] + 3
    encoder_hidden = tf_model.get_encoder()(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).last_hidden_state
    cache = tf_model.init_cache(encoder_hidden, tf.constant(ATTENTION_MASK), max_length)
    assert tuple(cache["self"].shape) == (3, 2, 2, 2, max_length, 8)
    assert tuple(cache["cross"].shape) == (3, 2, 2, 2, INPUT_IDS.shape[1], 8)
    logits = []
    for t in range(DECODER_IDS.shape[1]):
        step_logits, cache = step(tf.constant(DECODER_IDS[:, t:t + 1]), cache, tf.constant(t, tf.int32),
                                  tf.constant(ATTENTION_MASK))
        assert tuple(step_logits.shape) == (2, 99)
        logits.append(step_logits.numpy())
    close(np.stack(logits, axis=1), ref)
    written = np.abs(cache["self"].numpy()).sum(axis=(0, 1, 2, 3, 5))
    assert np.all(written[:DECODER_IDS.shape[1]] > 0) and np.all(written[DECODER_IDS.shape[1]:] == 0)


def test_decode_step_over_a_static_cache_matches_full_forward(pair):
    pt_model, tf_model, _ = pair
    check_decode_steps(pt_model, tf_model, tf_model.decode_step)


def test_forward_and_decode_step_compile_with_xla():
    pt_model, tf_model, _ = build_pair(scale_embedding=True)
    check_decode_steps(pt_model, tf_model, tf.function(tf_model.decode_step, jit_compile=True))

    @tf.function(jit_compile=True)
    def forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask):
        return tf_model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                        decoder_attention_mask=decoder_attention_mask).logits

    ref = pt_forward(pt_model, **full_inputs()).logits
    close(forward(*(tf.constant(v) for v in full_inputs().values())), ref)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_transformers(name):
    x = np.linspace(-6, 6, 241, dtype=np.float32)
    expected = ACT2FN[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(ACTIVATIONS[name](tf.constant(x))), expected, atol=1e-6, rtol=0)


# === Weights ===
def test_weight_table_covers_every_weight_and_round_trips_bit_exact(pair):
    _, tf_model, state = pair
    table = tf_model.pt_weight_table()
    assert {id(v) for v in tf_model.weights} == {id(row.variable) for row in table}
    assert len(table) == len(tf_model.weights)
    aliases = tf_model.pt_weight_aliases()
    assert set(aliases) == {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    exported = pt_weights(tf_model)
    assert set(exported) == set(state) - set(aliases)
    for name, value in exported.items():
        assert value.dtype == state[name].dtype, name
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    bias = next(row.variable for row in table if row.pt_name == "final_logits_bias")
    assert not bias.trainable and tuple(bias.shape) == (1, 99)


def test_checkpoint_written_by_save_pretrained_loads(tmp_path):
    pt_model, _, _ = build_pair()
    pt_model.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    # transformers 5 writes the tied embedding once, under model.shared.weight
    assert "model.shared.weight" in tensors and "lm_head.weight" not in tensors
    fresh = TFBartForConditionalGeneration(tiny_config())
    assert load_pt_weights(fresh, tensors, source=str(tmp_path)) == []
    ref = pt_forward(pt_model, **full_inputs())
    close(fresh(**full_inputs()).logits, ref.logits)


def test_wrong_shape_raises_naming_the_weight():
    _, _, state = build_pair()
    broken = dict(state)
    broken["model.decoder.layers.1.fc1.weight"] = np.zeros((5, 16), np.float32)
    fresh = TFBartForConditionalGeneration(tiny_config())
    fresh.ensure_built()
    before = fresh.shared.embeddings.numpy().copy()
    with pytest.raises(SubModelWeightError, match=r"model\.decoder\.layers\.1\.fc1\.weight"):
        load_pt_weights(fresh, broken)
    np.testing.assert_array_equal(fresh.shared.embeddings.numpy(), before)  # nothing assigned


# === Training and precision ===
def test_gradients_reach_every_trainable_variable():
    _, tf_model, _ = build_pair(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
                                encoder_layerdrop=0.3, decoder_layerdrop=0.3)
    labels = tf.constant(np.roll(DECODER_IDS, -1, axis=1))
    with tf.GradientTape() as tape:
        logits = tf_model(**full_inputs(), training=True).logits
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    grads = tape.gradient(loss, tf_model.trainable_variables)
    assert len(tf_model.trainable_variables) == len(tf_model.weights) - 1  # all but final_logits_bias
    missing = [v.path for v, g in zip(tf_model.trainable_variables, grads) if g is None]
    assert not missing, missing
    # dropout is active in training and inactive otherwise
    eval_logits = tf_model(**full_inputs()).logits
    assert not np.allclose(logits.numpy(), eval_logits.numpy())
    close(tf_model(**full_inputs(), training=False).logits, eval_logits, atol=0)


def test_mixed_bfloat16_forward_is_close_to_float32(pair):
    _, tf_model, state = pair
    expected = tf_model(**full_inputs()).logits.numpy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        low = TFBartForConditionalGeneration(tf_model.config)
        load_pt_weights(low, state)
        out = low(**full_inputs())
        hidden = low.get_encoder()(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).last_hidden_state
        cache = low.init_cache(hidden, tf.constant(ATTENTION_MASK), 4)
        step_logits, cache = low.decode_step(tf.constant(DECODER_IDS[:, :1]), cache, tf.constant(0), ATTENTION_MASK)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.logits.dtype == tf.float32 and out.encoder_last_hidden_state.dtype == tf.bfloat16
    assert cache["self"].dtype == tf.bfloat16
    bound = BF16_RELATIVE_TO_MAX * np.abs(expected).max()
    np.testing.assert_allclose(out.logits.numpy(), expected, atol=bound, rtol=0)
    np.testing.assert_allclose(step_logits.numpy(), expected[:, 0], atol=bound, rtol=0)


# === Configuration ===
@pytest.mark.parametrize("field, value", [
    ("add_final_layer_norm", True), ("normalize_before", True), ("add_bias_logits", True),
    ("static_position_embeddings", True), ("normalize_embedding", False), ("extra_pos_embeddings", 0),
    ("tie_word_embeddings", False), ("activation_function", "gelu_10"),
])
def test_unsupported_config_fields_raise_naming_the_field(field, value):
    config = tiny_config()
    setattr(config, field, value)
    with pytest.raises(ValueError, match=field):
        TFBartForConditionalGeneration(config)


def test_layers_serialize_with_get_config():
    attention = BartAttention(16, 4, dropout=0.1, init_std=0.3, name="attn")
    assert BartAttention.from_config(attention.get_config()).get_config() == attention.get_config()
    layer = BartDecoderLayer(16, 2, 24, activation="relu", dropout=0.1, name="dec")
    clone = BartDecoderLayer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and clone.activation == "relu"
    model = TFBartForConditionalGeneration(tiny_config())
    model.ensure_built()
    rebuilt = TFBartForConditionalGeneration.from_config(model.get_config())
    rebuilt.ensure_built()
    assert [tuple(v.shape) for v in rebuilt.weights] == [tuple(v.shape) for v in model.weights]
    assert rebuilt.get_config()["config"] == model.get_config()["config"]

"""rag_tf's Keras T5 generator against transformers' PyTorch T5ForConditionalGeneration (the oracle).

Two tiny configs: v1.0 (ReLU feed-forward, decoder output scaled before the shared-embedding head)
and v1.1 (gated-gelu, no scaling; transformers 5 still ties the head unless a checkpoint carries its
own `lm_head.weight`). Sequences are longer than max_distance so the far buckets are exercised, and
the decoder is deeper than the encoder.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from safetensors.numpy import load_file, save_file
from transformers import T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from rag_tf.models.t5 import TFT5ForConditionalGeneration, lm_head_is_tied, relative_position_bucket
from rag_tf.models.weights import SubModelWeightError, load_pt_weights, pt_weights

# float32: atol 1e-5, plus rtol 1e-5 because the unscaled v1.1 logits reach ~10 (1e-5 is ~10 ulps there)
ATOL, RTOL = 1e-5, 1e-5
# bfloat16 keeps 8 significant bits and five blocks compound the rounding: allow 2% of the largest
# logit (PyTorch's own bfloat16 run of the same models differs from float32 by 0.03 and 0.22, 0.8% / 1.1%)
BF16_SHARE = 0.02
SRC_LEN, TGT_LEN = 26, 24  # > relative_attention_max_distance (20)
LARGEST: dict[str, float] = {}
VARIANTS = {"v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
            "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)}


def make_config(variant: str, **overrides) -> T5Config:
    values = dict(vocab_size=99, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=3, num_heads=2,
                  relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.1,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **VARIANTS[variant])
    return T5Config(**{**values, **overrides})


def close(quantity, got, want, atol=ATOL, rtol=RTOL):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    LARGEST[quantity] = max(LARGEST.get(quantity, 0.0), float(np.max(np.abs(got - want))))
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=quantity)


@pytest.fixture(scope="module", autouse=True)
def report_largest():
    yield
    print("\nlargest T5 PT/TF differences:", {k: f"{v:.2e}" for k, v in sorted(LARGEST.items())})


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(2, 99, (3, SRC_LEN))
    mask = np.ones_like(ids)
    mask[1, 17:] = 0  # right padding
    mask[2, :5] = 0  # left padding
    dec = np.concatenate([np.zeros((3, 1), np.int64), rng.randint(2, 99, (3, TGT_LEN - 1))], axis=1)
    dec_mask = np.ones_like(dec)
    dec_mask[1, 15:] = 0
    dec_mask[2, 20:] = 0
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec, "decoder_attention_mask": dec_mask}


def _pt_forward(pt, **kw):
    with torch.no_grad():
        return pt(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()})


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, inputs):
    config = make_config(request.param)
    torch.manual_seed(0)
    pt = T5ForConditionalGeneration(config).eval()
    ours = TFT5ForConditionalGeneration(config)
    ours.ensure_built()
    state = {k: v.numpy() for k, v in pt.state_dict().items()}
    assert load_pt_weights(ours, state) == []
    return request.param, pt, ours, state, _pt_forward(pt, **inputs)


@pytest.mark.parametrize("num_buckets,max_distance", [(8, 20), (32, 128), (16, 50)])
def test_buckets_match_pytorch(num_buckets, max_distance):
    relative = np.arange(-400, 401)
    for bidirectional in (True, False):
        want = T5Attention._relative_position_bucket(torch.tensor(relative), bidirectional, num_buckets, max_distance)
        got = relative_position_bucket(tf.constant(relative), bidirectional, num_buckets, max_distance)
        np.testing.assert_array_equal(np.asarray(got), want.numpy())


def test_config_semantics(pair):
    variant, pt, ours, _, _ = pair
    assert ours.scale_decoder_outputs == pt.config.scale_decoder_outputs == (variant == "v1.0")
    assert ours.tie_lm_head and pt.lm_head.weight is pt.shared.weight  # transformers 5 ties both variants
    assert ours.get_output_embeddings() is ours.get_input_embeddings()


def test_encoder_matches(pair, inputs):
    _, _, ours, _, want = pair
    got = ours.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    close("encoder_hidden", got.last_hidden_state, want.encoder_last_hidden_state)


def test_full_forward_logits_with_padding(pair, inputs):
    _, _, ours, _, want = pair
    got = ours(**inputs)
    close("logits", got.logits, want.logits)
    # encoder outputs given: the encoder is skipped (EncoderOutput, tuple, tensor)
    encoded = ours.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    rest = {k: inputs[k] for k in ("attention_mask", "decoder_input_ids", "decoder_attention_mask")}
    for given in (encoded, (encoded.last_hidden_state,)):
        close("logits", ours(encoder_outputs=given, **rest).logits, want.logits)


def test_left_padded_decoder_rows(pair, inputs):
    """Rows whose first decoder keys are masked (fully masked query rows) behave as in PyTorch."""
    _, pt, ours, _, _ = pair
    dec_mask = inputs["decoder_attention_mask"].copy()
    dec_mask[0, :3] = 0
    kw = {**inputs, "decoder_attention_mask": dec_mask}
    close("logits", ours(**kw).logits, _pt_forward(pt, **kw).logits)


def test_incremental_decoding_with_past(pair, inputs):
    _, _, ours, _, want = pair
    dec, dec_mask = inputs["decoder_input_ids"], inputs["decoder_attention_mask"]
    encoded = ours.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    common = {"encoder_outputs": encoded, "attention_mask": inputs["attention_mask"], "use_cache": True}
    out = ours(decoder_input_ids=dec[:, :5], decoder_attention_mask=dec_mask[:, :5], **common)
    steps = [out.logits]
    for t in range(5, TGT_LEN, 3):  # chunks of several tokens, then of one
        out = ours(decoder_input_ids=dec[:, t:t + 3], decoder_attention_mask=dec_mask[:, :t + 3],
                   past_key_values=out.past_key_values, **common)
        steps.append(out.logits)
    assert out.past_key_values[0][0].shape == (3, 2, TGT_LEN, 8)
    assert len(out.past_key_values) == 3 and out.past_key_values[0][2].shape == (3, 2, SRC_LEN, 8)
    close("logits_past", np.concatenate([s.numpy() for s in steps], axis=1), want.logits)


def test_call_with_past_compiles_with_xla(pair, inputs):
    variant, _, ours, _, want = pair
    if variant != "v1.0":
        pytest.skip("one variant is enough to show the graph traces (saves ~5 s)")
    mask, dec, dec_mask = inputs["attention_mask"], inputs["decoder_input_ids"], inputs["decoder_attention_mask"]
    first = ours(input_ids=inputs["input_ids"], attention_mask=mask, decoder_input_ids=dec[:, :7],
                 decoder_attention_mask=dec_mask[:, :7], use_cache=True)

    @tf.function(jit_compile=True)
    def rest(encoder_hidden, mask, new_ids, dec_mask, past):
        return ours(encoder_outputs=(encoder_hidden,), attention_mask=mask, decoder_input_ids=new_ids,
                    decoder_attention_mask=dec_mask, past_key_values=past).logits

    got = rest(first.encoder_last_hidden_state, tf.constant(mask), tf.constant(dec[:, 7:]), tf.constant(dec_mask),
               first.past_key_values)
    close("logits_past", np.concatenate([first.logits.numpy(), got.numpy()], axis=1), want.logits)


def _decode_eagerly(ours, dec, encoder_hidden, encoder_mask):
    cache = ours.init_cache(encoder_hidden, encoder_mask, TGT_LEN)
    assert cache["self"].shape == (3, 2, 3, 2, TGT_LEN, 8) and cache["cross"].shape == (3, 2, 3, 2, SRC_LEN, 8)
    logits = []
    for t in range(TGT_LEN):
        step_logits, cache = ours.decode_step(tf.constant(dec[:, t:t + 1]), cache, tf.constant(t, tf.int32),
                                              tf.constant(encoder_mask))
        logits.append(step_logits.numpy())
    return np.stack(logits, axis=1)


def _decode_in_xla_loop(ours, dec, encoder_hidden, encoder_mask):
    """Teacher-forced steps in a tf.while_loop compiled by XLA; ids[:, t:t + 1] has a dynamic width there."""

    @tf.function(jit_compile=True)
    def run(dec, encoder_hidden, encoder_mask):
        cache = ours.init_cache(encoder_hidden, encoder_mask, TGT_LEN)
        logits = tf.zeros((TGT_LEN, 3, 99))

        def body(t, cache, logits):
            step_logits, cache = ours.decode_step(dec[:, t:t + 1], cache, t, encoder_mask)
            return t + 1, cache, tf.tensor_scatter_nd_update(logits, [[t]], step_logits[None])

        return tf.while_loop(lambda t, *_: t < TGT_LEN, body, (tf.constant(0), cache, logits))[2]

    return np.transpose(run(tf.constant(dec), encoder_hidden, tf.constant(encoder_mask)).numpy(), (1, 0, 2))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_decode_step_static_cache(pair, inputs, compiled):
    variant, pt, ours, _, _ = pair
    if not compiled and variant != "v1.0":
        pytest.skip("the eager step runs the same code for both variants; XLA covers both (saves ~6 s)")
    dec = inputs["decoder_input_ids"]
    want = _pt_forward(pt, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       decoder_input_ids=dec)
    encoder_hidden = tf.constant(want.encoder_last_hidden_state.numpy())
    decode = _decode_in_xla_loop if compiled else _decode_eagerly
    close("logits_static_cache", decode(ours, dec, encoder_hidden, inputs["attention_mask"]), want.logits)


def test_weights_round_trip_and_names(pair):
    _, _, ours, state, _ = pair
    rows = ours.pt_weight_table()
    assert sorted(id(r.variable) for r in rows) == sorted(id(v) for v in ours.weights)  # each variable once
    aliases = ours.pt_weight_aliases()
    assert set(aliases) == {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    written = pt_weights(ours)
    assert set(written) == set(state) - set(aliases)
    for name, value in written.items():
        assert value.dtype == state[name].dtype and np.array_equal(value, state[name]), name


def test_wrong_shape_names_the_weight(pair):
    _, _, ours, state, _ = pair
    name = "decoder.block.2.layer.2.DenseReluDense.wo.weight"
    bad = {**state, name: np.zeros((16, 31), np.float32)}
    before = [v.numpy() for v in ours.weights]
    with pytest.raises(SubModelWeightError, match=name.replace(".", r"\.")):
        load_pt_weights(ours, bad)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, ours.weights))


def test_save_pretrained_checkpoint_loads(pair, inputs, tmp_path):
    variant, pt, _, state, want = pair
    pt.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    # transformers 5 writes the shared embedding once, under shared.weight
    assert set(state) - set(tensors) == {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                                         "lm_head.weight"}
    assert lm_head_is_tied(tensors)
    fresh = TFT5ForConditionalGeneration(pt.config)
    assert load_pt_weights(fresh, tensors, source=str(tmp_path)) == []
    close("logits", fresh(**inputs).logits, want.logits)


def test_untied_lm_head_checkpoint(pair, inputs, tmp_path):
    """A checkpoint with its own lm_head.weight (flan-T5): transformers 5 unties it on load; so do we."""
    _, pt, _, _, _ = pair
    pt.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["lm_head.weight"] = np.random.RandomState(1).normal(size=(99, 16)).astype(np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    untied_pt = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert untied_pt.lm_head.weight is not untied_pt.shared.weight
    assert not lm_head_is_tied(tensors)
    with pytest.raises(SubModelWeightError, match="lm_head.weight"):
        load_pt_weights(TFT5ForConditionalGeneration(pt.config), tensors)
    ours = TFT5ForConditionalGeneration(pt.config, tie_lm_head=False)
    assert load_pt_weights(ours, tensors) == [] and "lm_head.weight" not in ours.pt_weight_aliases()
    assert ours.get_output_embeddings() is ours.lm_head
    close("logits", ours(**inputs).logits, _pt_forward(untied_pt, **inputs).logits)
    written = pt_weights(ours)
    assert all(np.array_equal(written[k], tensors[k]) for k in written)


def test_output_flags_match_eager_pytorch(pair, inputs):
    _, pt, ours, _, _ = pair
    pt.set_attn_implementation("eager")
    try:
        want = _pt_forward(pt, **inputs, output_attentions=True, output_hidden_states=True)
    finally:
        pt.set_attn_implementation("sdpa")
    got = ours(**inputs, output_attentions=True, output_hidden_states=True)
    for name in ("encoder_hidden_states", "decoder_hidden_states", "encoder_attentions", "decoder_attentions",
                 "cross_attentions"):
        assert len(got[name]) == len(want[name]), name
        for g, w in zip(got[name], want[name]):
            close(name, g, w)


def test_gradients_reach_every_variable(pair, inputs):
    _, _, ours, _, _ = pair
    with tf.GradientTape() as tape:
        out = ours(**inputs, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.constant(inputs["decoder_input_ids"][:, 1:]), out.logits[:, :-1]))
    grads = tape.gradient(loss, ours.trainable_variables)
    assert len(grads) == len(ours.weights)
    missing = [v.path for v, g in zip(ours.trainable_variables, grads) if g is None]
    assert not missing


def test_dropout_follows_training(pair, inputs):
    _, _, ours, _, _ = pair
    eval_a, eval_b = ours(**inputs).logits.numpy(), ours(**inputs, training=False).logits.numpy()
    assert np.array_equal(eval_a, eval_b)
    assert not np.allclose(ours(**inputs, training=True).logits.numpy(), eval_a)


def test_get_config_round_trip(pair, inputs):
    _, _, ours, _, _ = pair
    clone = TFT5ForConditionalGeneration.from_config(ours.get_config())
    clone.set_weights(ours.get_weights())
    np.testing.assert_array_equal(clone(**inputs).logits.numpy(), ours(**inputs).logits.numpy())


def test_mixed_bfloat16_close_to_float32(pair, inputs):
    _, pt, _, state, want = pair
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        ours = TFT5ForConditionalGeneration(pt.config)
        load_pt_weights(ours, state)
        assert ours.compute_dtype == "bfloat16" and all(v.dtype == "float32" for v in ours.weights)
        out = ours(**inputs)
        cache = ours.init_cache(out.encoder_last_hidden_state, inputs["attention_mask"], 4)
        assert cache["self"].dtype == tf.bfloat16
        step_logits, _ = ours.decode_step(tf.constant(inputs["decoder_input_ids"][:, :1]), cache, tf.constant(0),
                              tf.constant(inputs["attention_mask"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(out.logits.numpy()))
    atol = BF16_SHARE * float(want.logits.abs().max())
    close("logits_bf16", out.logits, want.logits, atol=atol, rtol=0)
    close("logits_bf16", step_logits, want.logits[:, 0], atol=atol, rtol=0)


@pytest.mark.parametrize("feed_forward_proj,d_kv", [("gated-silu", 6), ("gelu", 5)])
def test_other_activations_and_head_sizes(feed_forward_proj, d_kv, inputs):
    """The general "[gated-]<act>" form, and heads * d_kv != d_model."""
    config = make_config("v1.0", feed_forward_proj=feed_forward_proj, d_kv=d_kv)
    assert config.dense_act_fn == feed_forward_proj.split("-")[-1]
    torch.manual_seed(1)
    pt = T5ForConditionalGeneration(config).eval()
    ours = TFT5ForConditionalGeneration(config)
    load_pt_weights(ours, {k: v.numpy() for k, v in pt.state_dict().items()})
    close("logits", ours(**inputs).logits, _pt_forward(pt, **inputs).logits)


def test_unsupported_activation_is_named():
    config = make_config("v1.0", feed_forward_proj="gated-relu2")
    with pytest.raises(NotImplementedError, match="relu2"):
        TFT5ForConditionalGeneration(config)

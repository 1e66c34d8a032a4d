"""BART as a Keras 3 model: `TFBartForConditionalGeneration`, the seq2seq generator of RAG.

The numerics follow transformers' PyTorch `BartForConditionalGeneration`: learned positions looked
up at `position + 2` (the table has `max_position_embeddings + 2` rows), token embeddings scaled by
`sqrt(d_model)` when `scale_embedding`, a layer norm on the embeddings of both stacks, post-norm
blocks (residual, then `LayerNormalization(epsilon=1e-5)`), queries scaled by `head_dim ** -0.5`,
one embedding matrix (`model.shared`) for encoder input, decoder input and the LM head, plus the
non-trainable `final_logits_bias` (a buffer in PyTorch).

Precision: layers compute in their compute dtype (so `mixed_float16` / `mixed_bfloat16` work);
the softmax, its masking (with float32's most negative finite value, via `where`, so two masks
never add up to -inf) and the layer-norm statistics run in float32, and the logits are returned
in float32.

Masks are `(B, L)` 1/0 (any dtype). The decoder's self-attention is causal and also honours
`decoder_attention_mask`; cross-attention ignores the keys of padded encoder positions.
"""

from __future__ import annotations

import math
import types

import keras
from keras import ops

from .outputs import EncoderOutput, Seq2SeqLMOutput
from .weights import IDENTITY, TRANSPOSE, WeightRow

POSITION_OFFSET = 2
LAYER_NORM_EPSILON = 1e-5
_FLOAT32_MIN = -3.4028234663852886e38  # the most negative finite float32

# Fields of BART-family configs (mBART, old fairseq-style BART configs) whose non-default values
# change the architecture; this class implements only the value given here.
_FIXED_FIELDS = {
    "add_final_layer_norm": False,
    "normalize_before": False,
    "add_bias_logits": False,
    "static_position_embeddings": False,
    "normalize_embedding": True,
    "extra_pos_embeddings": POSITION_OFFSET,
    "tie_word_embeddings": True,
}


def _gelu_tanh(x):
    return keras.activations.gelu(x, approximate=True)


ACTIVATIONS = {
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),  # exact, with erf
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "relu": keras.activations.relu,
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
    "tanh": keras.activations.tanh,
}


def check_config(config) -> None:
    """Raise `ValueError` naming the field for a configuration this implementation would get wrong."""
    model_type = getattr(config, "model_type", "bart")
    if model_type != "bart":
        raise ValueError(f"TFBartForConditionalGeneration needs model_type 'bart', got {model_type!r}")
    for field, supported in _FIXED_FIELDS.items():
        value = getattr(config, field, supported)
        if value != supported:
            raise ValueError(f"BART config field {field}={value!r} is not supported (only {supported!r})")
    if config.activation_function not in ACTIVATIONS:
        raise ValueError(f"BART config field activation_function={config.activation_function!r} is not supported "
                         f"(one of {sorted(ACTIVATIONS)})")
    for side in ("encoder", "decoder"):
        heads = getattr(config, f"{side}_attention_heads")
        if config.d_model % heads:
            raise ValueError(f"BART config: d_model={config.d_model} is not divisible by "
                             f"{side}_attention_heads={heads}")


def _dense(units, init_std, name):
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.RandomNormal(stddev=init_std),
                              name=name)


def _layer_norm(name):
    return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name)


def _key_mask(mask):
    """(B, L) 1/0 padding mask of any dtype -> bool (B, 1, 1, L) over attention keys; None stays None."""
    if mask is None:
        return None
    mask = ops.convert_to_tensor(mask)
    return ops.not_equal(mask, ops.zeros((), mask.dtype))[:, None, None, :]


@keras.saving.register_keras_serializable(package="rag_tf")
class PaddedNormal(keras.initializers.Initializer):
    """Normal(0, stddev) with the row `padding_index` zeroed, as transformers initialises embeddings."""

    def __init__(self, stddev=0.02, padding_index=None):
        self.stddev, self.padding_index = stddev, padding_index

    def __call__(self, shape, dtype=None):
        values = keras.random.normal(shape, stddev=self.stddev, dtype=dtype)
        if self.padding_index is None:
            return values
        keep = ops.not_equal(ops.arange(shape[0]), self.padding_index)[:, None]
        return ops.where(keep, values, ops.zeros_like(values))

    def get_config(self):
        return {"stddev": self.stddev, "padding_index": self.padding_index}


class BartAttention(keras.layers.Layer):
    """Multi-head attention with biased q/k/v/out projections; keys and values are projected by
    `key_value` so callers can cache them (decoder self-attention) or compute them once (cross)."""

    def __init__(self, hidden_dim, num_heads, dropout=0.0, init_std=0.02, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.hidden_dim, self.num_heads, self.dropout, self.init_std = hidden_dim, num_heads, dropout, init_std
        self.head_dim = hidden_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        # === Submodules ===
        self.q_proj = _dense(hidden_dim, init_std, "q_proj")
        self.k_proj = _dense(hidden_dim, init_std, "k_proj")
        self.v_proj = _dense(hidden_dim, init_std, "v_proj")
        self.out_proj = _dense(hidden_dim, init_std, "out_proj")
        self.attention_dropout = keras.layers.Dropout(dropout, name="attention_dropout")

    def build(self, input_shape=None):
        for dense in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            dense.build((None, None, self.hidden_dim))
        self.built = True

    def _split_heads(self, x):  # (B, T, H*D) -> (B, H, T, D)
        return ops.transpose(ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def key_value(self, states):
        return self._split_heads(self.k_proj(states)), self._split_heads(self.v_proj(states))

    def call(self, hidden, key, value, mask=None, training=False):
        """hidden (B, T, H*D); key/value (B, H, S, D); mask bool broadcastable to (B, H, T, S)."""
        query = self._split_heads(self.q_proj(hidden) * ops.cast(self.scaling, self.compute_dtype))
        scores = ops.cast(ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))), "float32")
        if mask is not None:
            scores = ops.where(mask, scores, ops.full_like(scores, _FLOAT32_MIN))
        weights = self.attention_dropout(ops.softmax(scores, axis=-1), training=training)
        context = ops.matmul(ops.cast(weights, self.compute_dtype), value)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (ops.shape(hidden)[0], -1, self.hidden_dim))
        return self.out_proj(context), weights

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "dropout": self.dropout, "init_std": self.init_std}


class _BartBlock(keras.layers.Layer):
    """Shared parts of the encoder and decoder layers: self-attention and feed-forward, post-norm."""

    def __init__(self, hidden_dim, num_heads, intermediate_dim, activation="gelu", dropout=0.0,
                 attention_dropout=0.0, activation_dropout=0.0, init_std=0.02, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.hidden_dim, self.num_heads, self.intermediate_dim = hidden_dim, num_heads, intermediate_dim
        self.activation, self.dropout, self.init_std = activation, dropout, init_std
        self.attention_dropout_rate, self.activation_dropout = attention_dropout, activation_dropout
        self.activation_fn = ACTIVATIONS[activation]
        # === Submodules ===
        self.self_attn = BartAttention(hidden_dim, num_heads, attention_dropout, init_std, name="self_attn")
        self.self_attn_layer_norm = _layer_norm("self_attn_layer_norm")
        self.fc1 = _dense(intermediate_dim, init_std, "fc1")
        self.fc2 = _dense(hidden_dim, init_std, "fc2")
        self.final_layer_norm = _layer_norm("final_layer_norm")
        self.residual_dropout = keras.layers.Dropout(dropout, name="residual_dropout")
        self.activation_dropout_layer = keras.layers.Dropout(activation_dropout, name="activation_dropout")

    def build(self, input_shape=None):
        shape = (None, None, self.hidden_dim)
        self.self_attn.build(shape)
        for norm in (self.self_attn_layer_norm, self.final_layer_norm):
            norm.build(shape)
        self.fc1.build(shape)
        self.fc2.build((None, None, self.intermediate_dim))
        self.built = True

    def _residual(self, residual, update, norm, training):
        return norm(residual + self.residual_dropout(update, training=training))

    def _feed_forward(self, hidden, training):
        update = self.activation_dropout_layer(self.activation_fn(self.fc1(hidden)), training=training)
        return self._residual(hidden, self.fc2(update), self.final_layer_norm, training)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim, "activation": self.activation, "dropout": self.dropout,
                "attention_dropout": self.attention_dropout_rate, "activation_dropout": self.activation_dropout,
                "init_std": self.init_std}


class BartEncoderLayer(_BartBlock):
    """Self-attention over the (unmasked) source positions, then the feed-forward block."""

    def call(self, hidden, mask=None, training=False):
        key, value = self.self_attn.key_value(hidden)
        update, weights = self.self_attn(hidden, key, value, mask, training=training)
        hidden = self._residual(hidden, update, self.self_attn_layer_norm, training)
        return self._feed_forward(hidden, training), weights


class BartDecoderLayer(_BartBlock):
    """Causal self-attention, cross-attention to the encoder, then the feed-forward block.

    `store_self_kv(key, value) -> (all_keys, all_values)` decides what the self-attention attends
    to: the new tokens' keys alone, concatenated to a past, or written into a static cache.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_attn = BartAttention(self.hidden_dim, self.num_heads, self.attention_dropout_rate,
                                          self.init_std, name="encoder_attn")
        self.encoder_attn_layer_norm = _layer_norm("encoder_attn_layer_norm")

    def build(self, input_shape=None):
        super().build(input_shape)
        self.encoder_attn.build((None, None, self.hidden_dim))
        self.encoder_attn_layer_norm.build((None, None, self.hidden_dim))

    def call(self, hidden, self_mask, cross_key, cross_value, cross_mask, store_self_kv=None, training=False):
        key, value = self.self_attn.key_value(hidden)
        if store_self_kv is not None:
            key, value = store_self_kv(key, value)
        update, self_weights = self.self_attn(hidden, key, value, self_mask, training=training)
        hidden = self._residual(hidden, update, self.self_attn_layer_norm, training)
        update, cross_weights = self.encoder_attn(hidden, cross_key, cross_value, cross_mask, training=training)
        hidden = self._residual(hidden, update, self.encoder_attn_layer_norm, training)
        return self._feed_forward(hidden, training), (key, value), self_weights, cross_weights


class _BartStack(keras.layers.Layer):
    """Token embedding (shared, scaled) + learned positions + layer norm + dropout, then the layers."""

    layer_class = None

    def __init__(self, config, embed_tokens, side, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.config, self.side = config, side
        self.hidden_dim = config.d_model
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.layerdrop = float(getattr(config, f"{side}_layerdrop", 0.0) or 0.0)
        # === Submodules ===
        self.embed_tokens = embed_tokens  # the model's `shared` layer (its weights are listed once)
        self.embed_positions = keras.layers.Embedding(
            config.max_position_embeddings + POSITION_OFFSET, config.d_model,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=config.init_std), name="embed_positions")
        self.layernorm_embedding = _layer_norm("layernorm_embedding")
        self.embedding_dropout = keras.layers.Dropout(config.dropout, name="embedding_dropout")
        self.layers = [
            self.layer_class(config.d_model, getattr(config, f"{side}_attention_heads"),
                             getattr(config, f"{side}_ffn_dim"), config.activation_function, config.dropout,
                             config.attention_dropout, config.activation_dropout, config.init_std,
                             name=f"layers_{i}")
            for i in range(getattr(config, f"{side}_layers"))
        ]
        self.layerdrop_seed = keras.random.SeedGenerator(0) if self.layerdrop > 0 else None

    def build(self, input_shape=None):
        self.embed_positions.build((None, None))
        self.layernorm_embedding.build((None, None, self.hidden_dim))
        for layer in self.layers:
            layer.build()
        self.built = True

    def embed(self, input_ids, positions, training):
        """positions: (1, T) or (B, T) int, counted from 0 (the offset is added here)."""
        tokens = self.embed_tokens(input_ids) * ops.cast(self.embed_scale, self.compute_dtype)
        hidden = tokens + ops.cast(self.embed_positions(positions + POSITION_OFFSET), self.compute_dtype)
        return self.embedding_dropout(self.layernorm_embedding(hidden), training=training)

    def _layer_dropped(self, training):
        """LayerDrop: in training, skip each layer with probability `{side}_layerdrop` (None: never)."""
        if not training or self.layerdrop <= 0:
            return None
        return keras.random.uniform((), seed=self.layerdrop_seed) < self.layerdrop

    # No get_config: a stack is rebuilt by its model, from the model's config and `shared` layer.


class BartEncoder(_BartStack):
    """The encoder; `model.get_encoder()` returns it. Called as `encoder(input_ids=, attention_mask=)`."""

    layer_class = BartEncoderLayer

    def __init__(self, config, embed_tokens, **kwargs):
        super().__init__(config, embed_tokens, "encoder", **kwargs)

    def call(self, input_ids=None, attention_mask=None, output_attentions=False, output_hidden_states=False,
             training=False):
        positions = ops.arange(ops.shape(input_ids)[1])[None, :]
        hidden = self.embed(input_ids, positions, training)
        mask = _key_mask(attention_mask)
        all_hidden, all_weights = [hidden], []
        for layer in self.layers:
            new_hidden, weights = layer(hidden, mask, training=training)
            dropped = self._layer_dropped(training)
            hidden = new_hidden if dropped is None else ops.where(dropped, hidden, new_hidden)
            all_hidden.append(hidden)
            all_weights.append(weights)
        return EncoderOutput(last_hidden_state=hidden,
                             hidden_states=tuple(all_hidden) if output_hidden_states else None,
                             attentions=tuple(all_weights) if output_attentions else None)


class BartDecoder(_BartStack):
    """The decoder stack. One `call` serves the full forward (optionally after a past) and the step
    against a static cache; only the per-layer `store_self_kv` differs, so the two cannot drift apart."""

    layer_class = BartDecoderLayer

    def __init__(self, config, embed_tokens, **kwargs):
        super().__init__(config, embed_tokens, "decoder", **kwargs)

    def cross_key_values(self, encoder_hidden):
        return [layer.encoder_attn.key_value(encoder_hidden) for layer in self.layers]

    def call(self, input_ids, positions, self_mask, cross_kv, cross_mask, store_self_kv=None, training=False):
        """Returns (hidden, [(self_k, self_v) per layer], hidden per layer, self weights, cross weights).

        cross_kv: [(key, value)] per layer; store_self_kv: per layer, a callable or None."""
        hidden = self.embed(input_ids, positions, training)
        all_hidden, self_kv, self_weights, cross_weights = [hidden], [], [], []
        for i, layer in enumerate(self.layers):
            new_hidden, kv, weights, cross = layer(hidden, self_mask, cross_kv[i][0], cross_kv[i][1], cross_mask,
                                                   store_self_kv=store_self_kv[i], training=training)
            dropped = self._layer_dropped(training)
            hidden = new_hidden if dropped is None else ops.where(dropped, hidden, new_hidden)
            all_hidden.append(hidden)
            self_kv.append(kv)
            self_weights.append(weights)
            cross_weights.append(cross)
        return hidden, self_kv, all_hidden, self_weights, cross_weights


class TFBartForConditionalGeneration(keras.Model):
    """BART encoder-decoder with the tied LM head, reading transformers' PyTorch BART weights.

    Example:
        >>> import numpy as np
        >>> from transformers import BartConfig
        >>> from rag_tf.models.bart import TFBartForConditionalGeneration
        >>> config = BartConfig(vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=2,
        ...                     encoder_attention_heads=4, decoder_attention_heads=4,
        ...                     encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)
        >>> model = TFBartForConditionalGeneration(config)
        >>> ids = np.array([[0, 5, 6, 2]])
        >>> out = model(input_ids=ids, attention_mask=np.ones_like(ids), decoder_input_ids=np.array([[2, 0]]))
        >>> tuple(out.logits.shape)
        (1, 2, 99)

    Weights load by PyTorch name with `rag_tf.models.weights.load_pt_weights(model, state_dict)`.
    """

    model_type = "bart"

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        check_config(config)
        # === Config ===
        self.config = config
        # === Submodules ===
        self.shared = keras.layers.Embedding(
            config.vocab_size, config.d_model, name="shared",
            embeddings_initializer=PaddedNormal(config.init_std, config.pad_token_id))
        self.encoder = BartEncoder(config, self.shared, name="encoder")
        self.decoder = BartDecoder(config, self.shared, name="decoder")

    def build(self, input_shape=None):
        self.shared.build((None, None))
        self.encoder.build()
        self.decoder.build()
        # A buffer in PyTorch: loaded and saved with the weights, never trained.
        self.final_logits_bias = self.add_weight(shape=(1, self.config.vocab_size), initializer="zeros",
                                                 trainable=False, name="final_logits_bias")
        self.built = True

    def ensure_built(self) -> None:
        if not self.built:
            self.build()

    # === Forward ===
    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
             encoder_outputs=None, past_key_values=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=False):
        if decoder_input_ids is None:
            if input_ids is None:
                raise ValueError("TFBartForConditionalGeneration needs `decoder_input_ids` (or `input_ids`, "
                                 "whose right shift BART then decodes, as transformers' BART does)")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                           output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states, training=training)
        elif not isinstance(encoder_outputs, EncoderOutput):
            encoder_outputs = EncoderOutput(last_hidden_state=_first(encoder_outputs))
        encoder_hidden = encoder_outputs.last_hidden_state
        cross_mask = _key_mask(attention_mask)

        length = ops.shape(decoder_input_ids)[1]
        if past_key_values is None:
            past_length = 0
            cross_kv = self.decoder.cross_key_values(encoder_hidden)
            store = [None] * len(self.decoder.layers)
        else:
            past_length = ops.shape(past_key_values[0][0])[2]
            cross_kv = [(past[2], past[3]) for past in past_key_values]
            store = [_concat_after(past[0], past[1]) for past in past_key_values]
        positions = past_length + ops.arange(length)
        key_positions = ops.arange(past_length + length)
        self_mask = (key_positions[None, :] <= positions[:, None])[None, None]  # (1, 1, T, past + T)
        if decoder_attention_mask is not None:
            self_mask = ops.logical_and(self_mask, _key_mask(decoder_attention_mask))

        hidden, self_kv, all_hidden, self_weights, cross_weights = self.decoder(
            decoder_input_ids, positions[None, :], self_mask, cross_kv, cross_mask, store_self_kv=store,
            training=training)
        return Seq2SeqLMOutput(
            logits=self._logits(hidden),
            past_key_values=tuple((k, v, ck, cv) for (k, v), (ck, cv) in zip(self_kv, cross_kv)) if use_cache else None,
            decoder_hidden_states=tuple(all_hidden) if output_hidden_states else None,
            decoder_attentions=tuple(self_weights) if output_attentions else None,
            cross_attentions=tuple(cross_weights) if output_attentions else None,
            encoder_last_hidden_state=encoder_hidden,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )

    def _logits(self, hidden):
        """Tied LM head in the compute dtype, returned in float32 with `final_logits_bias` added."""
        embeddings = ops.cast(self.shared.embeddings, self.compute_dtype)
        logits = ops.matmul(hidden, ops.transpose(embeddings))
        return ops.cast(logits, "float32") + ops.cast(self.final_logits_bias, "float32")

    def get_encoder(self):
        return self.encoder

    def get_input_embeddings(self):
        return self.shared

    def get_output_embeddings(self):
        return self.shared

    # === Static-cache decoding ===
    def init_cache(self, encoder_hidden, encoder_mask, max_length) -> dict:
        """{"self": zeros (layers, 2, R, heads, max_length, head_dim), "cross": (layers, 2, R, heads, L, head_dim)}.

        `encoder_mask` is not needed to build the cache (it is applied in every `decode_step`)."""
        del encoder_mask
        cross = ops.stack([ops.stack(kv) for kv in self.decoder.cross_key_values(encoder_hidden)])
        layers, heads = len(self.decoder.layers), self.config.decoder_attention_heads
        rows = ops.shape(encoder_hidden)[0]
        self_cache = ops.zeros((layers, 2, rows, heads, max_length, self.config.d_model // heads),
                               dtype=self.compute_dtype)
        return {"self": self_cache, "cross": ops.cast(cross, self.compute_dtype)}

    def decode_step(self, token_ids, cache, index, encoder_mask, training=False):
        """Logits (R, V) for the token after `token_ids` (R, 1) at position `index` (int32 scalar tensor),
        and the cache with this token's self-attention keys/values written into slot `index`."""
        index = ops.cast(index, "int32")
        state = {"self": cache["self"]}

        def writer(i):
            def store(key, value):
                update = ops.expand_dims(ops.stack([key, value]), 0)  # (1, 2, R, heads, 1, head_dim)
                state["self"] = ops.slice_update(state["self"], (i, 0, 0, 0, index, 0), update)
                return state["self"][i, 0], state["self"][i, 1]
            return store

        slots = ops.arange(ops.shape(cache["self"])[4], dtype="int32")
        self_mask = (slots <= index)[None, None, None, :]
        cross_mask = _key_mask(encoder_mask)
        cross_kv = [(cache["cross"][i, 0], cache["cross"][i, 1]) for i in range(len(self.decoder.layers))]
        store = [writer(i) for i in range(len(self.decoder.layers))]
        hidden = self.decoder(token_ids, ops.reshape(index, (1, 1)), self_mask, cross_kv, cross_mask,
                              store_self_kv=store, training=training)[0]
        return self._logits(hidden)[:, -1, :], {"self": state["self"], "cross": cache["cross"]}

    # === Weights under transformers' PyTorch names ===
    def pt_weight_table(self) -> list:
        self.ensure_built()
        rows = [WeightRow("model.shared.weight", self.shared.embeddings)]
        for side, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            prefix = f"model.{side}."
            rows.append(WeightRow(prefix + "embed_positions.weight", stack.embed_positions.embeddings))
            rows += _norm_rows(prefix + "layernorm_embedding", stack.layernorm_embedding)
            for i, layer in enumerate(stack.layers):
                rows += _layer_rows(f"{prefix}layers.{i}.", layer)
        rows.append(WeightRow("final_logits_bias", self.final_logits_bias))
        return rows

    def pt_weight_aliases(self) -> dict:
        tied = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
        return {name: "model.shared.weight" for name in tied}

    def get_config(self):
        config = self.config.to_dict() if hasattr(self.config, "to_dict") else dict(vars(self.config))
        return {**super().get_config(), "config": config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Without transformers in this module, a plain attribute view of the dict stands in for BartConfig.
        config = dict(config)
        model_config = types.SimpleNamespace(**config.pop("config"))
        return cls(model_config, **config)


def _first(encoder_outputs):
    if hasattr(encoder_outputs, "shape"):
        return encoder_outputs
    if isinstance(encoder_outputs, dict):
        return encoder_outputs["last_hidden_state"]
    return encoder_outputs[0]


def _concat_after(past_key, past_value):
    def store(key, value):
        return ops.concatenate([past_key, key], axis=2), ops.concatenate([past_value, value], axis=2)
    return store


def _dense_rows(name, dense):
    return [WeightRow(name + ".weight", dense.kernel, TRANSPOSE), WeightRow(name + ".bias", dense.bias, IDENTITY)]


def _norm_rows(name, norm):
    return [WeightRow(name + ".weight", norm.gamma), WeightRow(name + ".bias", norm.beta)]


def _layer_rows(prefix, layer):
    attentions = [("self_attn", layer.self_attn)]
    if isinstance(layer, BartDecoderLayer):
        attentions.append(("encoder_attn", layer.encoder_attn))
    rows = []
    for name, attention in attentions:
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            rows += _dense_rows(f"{prefix}{name}.{proj}", getattr(attention, proj))
        rows += _norm_rows(f"{prefix}{name}_layer_norm", getattr(layer, f"{name}_layer_norm"))
    rows += _dense_rows(prefix + "fc1", layer.fc1) + _dense_rows(prefix + "fc2", layer.fc2)
    return rows + _norm_rows(prefix + "final_layer_norm", layer.final_layer_norm)


def shift_tokens_right(input_ids, pad_token_id: int, decoder_start_token_id: int):
    """BART's default decoder input: the start token, then `input_ids` without its last token
    (-100 label padding read as the pad token)."""
    input_ids = ops.convert_to_tensor(input_ids)
    start = ops.full((ops.shape(input_ids)[0], 1), decoder_start_token_id, dtype=input_ids.dtype)
    shifted = ops.concatenate([start, input_ids[:, :-1]], axis=1)
    return ops.where(ops.equal(shifted, -100), ops.cast(pad_token_id, shifted.dtype), shifted)

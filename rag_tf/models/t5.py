"""T5 as a Keras 3 encoder-decoder generator that reads transformers' PyTorch T5 weights by name.

Covers T5 v1.0 (`feed_forward_proj="relu"`: `wi` then `wo`) and v1.1 / flan-T5 (`"gated-<act>"`:
`act(wi_0 x) * wi_1 x` then `wo`; `"gated-gelu"` means the tanh approximation `gelu_new`). The
numerics follow PyTorch `T5ForConditionalGeneration`: RMS layer norm (no mean, no bias, statistics in
float32), unscaled dot-product attention, and a learned relative position bias held by the first
block of each stack and shared by all its blocks (bidirectional buckets in the encoder, causal ones
in the decoder, computed from the true query and key positions, with a past or a static cache too).

Output head: the decoder output is scaled by `d_model ** -0.5` when `config.scale_decoder_outputs`
(transformers 5 sets it from the `tie_word_embeddings` a config was written with; configs without the
attribute use `tie_word_embeddings`). The head is the shared embedding unless `tie_lm_head=False`
(default: `config.tie_word_embeddings`), which gives a separate `lm_head` (checkpoints such as
flan-T5 store one that differs from `shared`; `lm_head_is_tied` tells). The token embeddings of both
stacks are always `shared`.

Float policy: everything runs in the layer's compute dtype except softmax and norm statistics
(float32) and the feed-forward output projection `wo`, kept in float32 like transformers'
`_keep_in_fp32_modules`; under float16 the residual stream is clamped as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from rag_tf.models.outputs import EncoderOutput, Seq2SeqLMOutput
from rag_tf.models.weights import IDENTITY, TRANSPOSE, WeightRow

_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
ACTIVATIONS = ("relu", "gelu", "gelu_python", "quick_gelu", "silu", "swish", "tanh", "sigmoid", "linear") + _TANH_GELU


def _activation(name: str, x):
    if name == "relu":
        return ops.relu(x)
    if name in ("gelu", "gelu_python"):
        return ops.gelu(x, approximate=False)
    if name in _TANH_GELU:
        return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
    if name == "quick_gelu":
        return x * ops.sigmoid(1.702 * x)
    if name in ("silu", "swish"):
        return ops.silu(x)
    if name == "tanh":
        return ops.tanh(x)
    if name == "sigmoid":
        return ops.sigmoid(x)
    return x  # linear


def _min_value(dtype):
    return tf.as_dtype(dtype).min


def _clamp_float16(x):
    """PyTorch T5's float16 guard: clip to the largest finite value (minus 1000 once an inf appeared)."""
    if keras.backend.standardize_dtype(x.dtype) != "float16":
        return x
    big = 65504.0
    limit = ops.cast(ops.where(ops.any(ops.isinf(x)), big - 1000.0, big), "float16")
    return ops.clip(x, -limit, limit)


def _bucket_table(num_buckets: int, max_distance: int) -> list[int]:
    """Bucket of every distance 0..max_distance + 1 (larger distances share the last entry).

    Small distances get a bucket each, larger ones logarithmic bins up to `max_distance`; computed
    once in float32 with PyTorch T5's operations, so bin edges fall exactly where PyTorch puts them.
    """
    max_exact = num_buckets // 2
    distance = np.arange(max_distance + 2)
    scaled = np.maximum(distance, max_exact).astype(np.float32) / np.float32(max_exact)
    log_ratio = np.log(scaled) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + (log_ratio * np.float32(num_buckets - max_exact)).astype(np.int64)
    return np.where(distance < max_exact, distance, np.minimum(large, num_buckets - 1)).tolist()


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's bucket (int32, in [0, num_buckets)) of `key position - query position`."""
    relative_position = ops.cast(relative_position, "int32")
    if bidirectional:
        num_buckets //= 2
        offset = ops.where(relative_position > 0, num_buckets, 0)
        distance = ops.abs(relative_position)
    else:
        offset = 0
        distance = ops.maximum(-relative_position, 0)
    table = _bucket_table(num_buckets, max_distance)
    table_tensor = ops.convert_to_tensor(np.asarray(table, np.int32))
    return offset + ops.take(table_tensor, ops.minimum(distance, len(table) - 1), axis=0)


def _normal(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


class T5LayerNorm(keras.layers.Layer):
    """RMS norm: `weight * x / sqrt(mean(x^2) + eps)`, statistics in float32."""

    def __init__(self, hidden_size, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.epsilon = hidden_size, epsilon

    def build(self, input_shape=None):
        self.weight = self.add_weight(name="weight", shape=(self.hidden_size,), initializer="ones")
        self.built = True

    def call(self, x):
        x32 = ops.cast(x, "float32")
        variance = ops.mean(ops.square(x32), axis=-1, keepdims=True)
        normed = ops.cast(x32 * ops.rsqrt(variance + self.epsilon), self.compute_dtype)
        return ops.cast(self.weight, self.compute_dtype) * normed

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "epsilon": self.epsilon}


class T5SharedEmbedding(keras.layers.Layer):
    """The shared token embedding; `project` uses it as the output head."""

    def __init__(self, vocab_size, hidden_size, initializer_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.hidden_size, self.initializer_factor = vocab_size, hidden_size, initializer_factor

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.vocab_size, self.hidden_size),
                                          initializer=_normal(self.initializer_factor), autocast=False)
        self.built = True

    def call(self, token_ids):
        return ops.cast(ops.take(self.embeddings, token_ids, axis=0), self.compute_dtype)

    def project(self, hidden):
        return ops.matmul(hidden, ops.transpose(ops.cast(self.embeddings, self.compute_dtype)))

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "initializer_factor": self.initializer_factor}


class T5Attention(keras.layers.Layer):
    """Multi-head attention without score scaling, optionally owning the relative position bias.

    Self-attention extends a `past_key_value` (concatenation) or writes into a static `cache`
    `(2, B, heads, T, head_dim)` at `cache_index`; cross-attention takes its `key_value` ready made
    (`project_key_value`). `attention_mask` is boolean, broadcastable to `(B, heads, Q, K)`.
    """

    def __init__(self, hidden_size, num_heads, head_dim, dropout_rate=0.0, has_relative_attention_bias=False,
                 num_buckets=32, max_distance=128, bidirectional=True, initializer_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.num_heads, self.head_dim = hidden_size, num_heads, head_dim
        self.dropout_rate, self.has_relative_attention_bias = dropout_rate, has_relative_attention_bias
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.initializer_factor = f = initializer_factor
        inner = num_heads * head_dim

        def dense(units, stddev, name):
            return keras.layers.Dense(units, use_bias=False, kernel_initializer=_normal(stddev),
                                      dtype=self.dtype_policy, name=name)

        self.q = dense(inner, f * (hidden_size * head_dim) ** -0.5, "q")
        self.k = dense(inner, f * hidden_size ** -0.5, "k")
        self.v = dense(inner, f * hidden_size ** -0.5, "v")
        self.o = dense(hidden_size, f * inner ** -0.5, "o")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        for layer in (self.q, self.k, self.v):
            layer.build((None, self.hidden_size))
        self.o.build((None, self.num_heads * self.head_dim))
        if self.has_relative_attention_bias:
            self.relative_attention_bias = self.add_weight(
                name="relative_attention_bias", shape=(self.num_buckets, self.num_heads),
                initializer=_normal(self.initializer_factor * self.hidden_size ** -0.5))
        self.built = True

    def _split_heads(self, x):
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def project_key_value(self, states):
        return self._split_heads(self.k(states)), self._split_heads(self.v(states))

    def compute_bias(self, query_positions, key_positions):
        """`(1, heads, Q, K)` bias for int32 positions `(Q,)` and `(K,)`."""
        buckets = relative_position_bucket(key_positions[None, :] - query_positions[:, None],
                                           self.bidirectional, self.num_buckets, self.max_distance)
        values = ops.take(ops.cast(self.relative_attention_bias, self.compute_dtype), buckets, axis=0)
        return ops.expand_dims(ops.transpose(values, (2, 0, 1)), 0)

    def call(self, hidden_states, position_bias=None, attention_mask=None, key_value=None, past_key_value=None,
             cache=None, cache_index=None, training=False):
        query = self._split_heads(self.q(hidden_states))
        if key_value is not None:
            key, value = key_value
        else:
            key, value = self.project_key_value(hidden_states)
            if past_key_value is not None:
                key = ops.concatenate([ops.cast(past_key_value[0], key.dtype), key], axis=2)
                value = ops.concatenate([ops.cast(past_key_value[1], value.dtype), value], axis=2)
            if cache is not None:
                cache = ops.slice_update(cache, [0, 0, 0, cache_index, 0], ops.stack([key, value]))
                key, value = cache[0], cache[1]
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        if position_bias is not None:
            scores = scores + position_bias
        if attention_mask is not None:
            scores = ops.where(attention_mask, scores, ops.cast(_min_value(self.compute_dtype), self.compute_dtype))
        weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), self.compute_dtype)
        weights = self.dropout(weights, training=training)
        output = ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3))
        output = ops.reshape(output, (ops.shape(output)[0], -1, self.num_heads * self.head_dim))
        return self.o(output), (cache if cache is not None else (key, value)), weights

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "num_heads": self.num_heads,
                "head_dim": self.head_dim, "dropout_rate": self.dropout_rate,
                "has_relative_attention_bias": self.has_relative_attention_bias, "num_buckets": self.num_buckets,
                "max_distance": self.max_distance, "bidirectional": self.bidirectional,
                "initializer_factor": self.initializer_factor}


class T5FeedForward(keras.layers.Layer):
    """`wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`; `wo` runs in float32."""

    def __init__(self, hidden_size, intermediate_size, activation="relu", gated=False, dropout_rate=0.0,
                 initializer_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise NotImplementedError(f"T5 feed-forward activation {activation!r} is not supported; "
                                      f"supported: {', '.join(ACTIVATIONS)}")
        self.hidden_size, self.intermediate_size, self.activation = hidden_size, intermediate_size, activation
        self.gated, self.dropout_rate, self.initializer_factor = gated, dropout_rate, initializer_factor
        wi_std = initializer_factor * hidden_size ** -0.5

        def dense(units, stddev, name, dtype=None):
            return keras.layers.Dense(units, use_bias=False, kernel_initializer=_normal(stddev),
                                      dtype=dtype or self.dtype_policy, name=name)

        self.wi_names = ("wi_0", "wi_1") if gated else ("wi",)
        self.wi = [dense(intermediate_size, wi_std, name) for name in self.wi_names]
        self.wo = dense(hidden_size, initializer_factor * intermediate_size ** -0.5, "wo", dtype="float32")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        for layer in self.wi:
            layer.build((None, self.hidden_size))
        self.wo.build((None, self.intermediate_size))
        self.built = True

    def call(self, x, training=False):
        hidden = _activation(self.activation, self.wi[0](x))
        if self.gated:
            hidden = hidden * self.wi[1](x)
        hidden = self.dropout(hidden, training=training)
        return ops.cast(self.wo(ops.cast(hidden, "float32")), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "activation": self.activation, "gated": self.gated, "dropout_rate": self.dropout_rate,
                "initializer_factor": self.initializer_factor}


class T5Block(keras.layers.Layer):
    """Pre-norm residual block: self-attention, cross-attention (decoder), feed-forward."""

    def __init__(self, hidden_size, num_heads, head_dim, intermediate_size, activation="relu", gated=False,
                 dropout_rate=0.0, epsilon=1e-6, is_decoder=False, has_relative_attention_bias=False,
                 num_buckets=32, max_distance=128, initializer_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self._args = dict(hidden_size=hidden_size, num_heads=num_heads, head_dim=head_dim,
                          intermediate_size=intermediate_size, activation=activation, gated=gated,
                          dropout_rate=dropout_rate, epsilon=epsilon, is_decoder=is_decoder,
                          has_relative_attention_bias=has_relative_attention_bias, num_buckets=num_buckets,
                          max_distance=max_distance, initializer_factor=initializer_factor)
        self.is_decoder, self.hidden_size = is_decoder, hidden_size
        attention = dict(hidden_size=hidden_size, num_heads=num_heads, head_dim=head_dim, dropout_rate=dropout_rate,
                         num_buckets=num_buckets, max_distance=max_distance, initializer_factor=initializer_factor,
                         dtype=self.dtype_policy)
        self.self_attention = T5Attention(has_relative_attention_bias=has_relative_attention_bias,
                                          bidirectional=not is_decoder, name="SelfAttention", **attention)
        self.self_attention_norm = T5LayerNorm(hidden_size, epsilon, dtype=self.dtype_policy, name="layer_norm_0")
        if is_decoder:
            self.cross_attention = T5Attention(name="EncDecAttention", **attention)
            self.cross_attention_norm = T5LayerNorm(hidden_size, epsilon, dtype=self.dtype_policy,
                                                    name="layer_norm_1")
        self.feed_forward = T5FeedForward(hidden_size, intermediate_size, activation, gated, dropout_rate,
                                          initializer_factor, dtype=self.dtype_policy, name="DenseReluDense")
        self.feed_forward_norm = T5LayerNorm(hidden_size, epsilon, dtype=self.dtype_policy, name="layer_norm_ff")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        parts = [self.self_attention, self.self_attention_norm, self.feed_forward, self.feed_forward_norm]
        if self.is_decoder:
            parts += [self.cross_attention, self.cross_attention_norm]
        for layer in parts:
            layer.build()
        self.built = True

    def call(self, hidden, position_bias, self_mask=None, cross_key_value=None, cross_mask=None,
             past_key_value=None, cache=None, cache_index=None, training=False):
        output, self_kv, self_weights = self.self_attention(
            self.self_attention_norm(hidden), position_bias=position_bias, attention_mask=self_mask,
            past_key_value=past_key_value, cache=cache, cache_index=cache_index, training=training)
        hidden = _clamp_float16(hidden + self.dropout(output, training=training))
        cross_weights = None
        if self.is_decoder:
            output, _, cross_weights = self.cross_attention(
                self.cross_attention_norm(hidden), attention_mask=cross_mask, key_value=cross_key_value,
                training=training)
            hidden = _clamp_float16(hidden + self.dropout(output, training=training))
        output = self.feed_forward(self.feed_forward_norm(hidden), training=training)
        hidden = _clamp_float16(hidden + self.dropout(output, training=training))
        return hidden, self_kv, self_weights, cross_weights

    def get_config(self):
        return {**super().get_config(), **self._args}


class T5Stack(keras.layers.Layer):
    """Blocks over given embeddings, then the final RMS norm; block 0 owns the position bias."""

    def __init__(self, num_layers, block_args, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_layers, self.block_args, self.dropout_rate = num_layers, dict(block_args), dropout_rate
        self.blocks = [T5Block(has_relative_attention_bias=i == 0, dtype=self.dtype_policy, name=f"block_{i}",
                               **block_args) for i in range(num_layers)]
        self.final_layer_norm = T5LayerNorm(block_args["hidden_size"], block_args["epsilon"],
                                            dtype=self.dtype_policy, name="final_layer_norm")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        for layer in [*self.blocks, self.final_layer_norm]:
            layer.build()
        self.built = True

    def call(self, inputs_embeds, query_positions, key_positions, self_mask=None, cross_key_values=None,
             cross_mask=None, past_key_values=None, cache=None, cache_index=None, output_attentions=False,
             output_hidden_states=False, training=False):
        position_bias = None
        if self.num_layers:
            position_bias = self.blocks[0].self_attention.compute_bias(query_positions, key_positions)
        hidden = self.dropout(inputs_embeds, training=training)
        hiddens, self_kvs, attentions, cross_attentions = [], [], [], []
        for i, block in enumerate(self.blocks):
            if output_hidden_states:
                hiddens.append(hidden)
            hidden, self_kv, weights, cross_weights = block(
                hidden, position_bias, self_mask=self_mask,
                cross_key_value=None if cross_key_values is None else cross_key_values[i], cross_mask=cross_mask,
                past_key_value=None if past_key_values is None else past_key_values[i],
                cache=None if cache is None else cache[i], cache_index=cache_index, training=training)
            self_kvs.append(self_kv)
            attentions.append(weights)
            cross_attentions.append(cross_weights)
        hidden = self.dropout(self.final_layer_norm(hidden), training=training)
        return {"last_hidden_state": hidden, "self_key_values": self_kvs,
                "hidden_states": tuple(hiddens) + (hidden,) if output_hidden_states else None,
                "attentions": tuple(attentions) if output_attentions else None,
                "cross_attentions": tuple(cross_attentions) if output_attentions else None}

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers, "block_args": self.block_args,
                "dropout_rate": self.dropout_rate}


class _ConfigView:
    """Attribute access over a config dict (for `from_config`)."""

    def __init__(self, values):
        self.__dict__.update(values)

    def to_dict(self):
        return dict(self.__dict__)


def lm_head_is_tied(tensors, prefix: str = "") -> bool:
    """False when `tensors` hold an `lm_head.weight` that differs from `shared.weight` (flan-T5, T5 v1.1)."""
    head, shared = tensors.get(prefix + "lm_head.weight"), tensors.get(prefix + "shared.weight")
    return head is None or (shared is not None and np.array_equal(np.asarray(head), np.asarray(shared)))


def _feed_forward_kind(config):
    if hasattr(config, "dense_act_fn") and hasattr(config, "is_gated_act"):
        return config.dense_act_fn, bool(config.is_gated_act)
    proj = getattr(config, "feed_forward_proj", "relu")
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"feed_forward_proj {proj!r} is neither '<act>' nor 'gated-<act>'")
    return ("gelu_new" if proj == "gated-gelu" else parts[-1]), parts[0] == "gated"


class TFT5ForConditionalGeneration(keras.Model):
    """T5 encoder-decoder with a language-modelling head (see the module docstring)."""

    model_type = "t5"
    # Names some checkpoints carry that PyTorch T5 ignores on load as well.
    pt_ignored_names = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)

    def __init__(self, config, tie_lm_head=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, Mapping):
            config = _ConfigView(config)
        self.config = config
        activation, gated = _feed_forward_kind(config)
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = getattr(config, "relative_attention_max_distance", 128)
        if self.num_buckets < 4 or self.max_distance <= self.num_buckets // 2:
            raise ValueError(f"relative_attention_num_buckets={self.num_buckets} with max_distance="
                             f"{self.max_distance}: need at least 4 buckets and max_distance > num_buckets // 2")
        self.tie_lm_head = bool(getattr(config, "tie_word_embeddings", True) if tie_lm_head is None else tie_lm_head)
        scale = getattr(config, "scale_decoder_outputs", None)
        self.scale_decoder_outputs = bool(getattr(config, "tie_word_embeddings", True) if scale is None else scale)
        self.num_heads, self.head_dim, self.d_model = config.num_heads, config.d_kv, config.d_model
        factor = getattr(config, "initializer_factor", 1.0)
        num_decoder_layers = getattr(config, "num_decoder_layers", None)
        self.num_decoder_layers = config.num_layers if num_decoder_layers is None else num_decoder_layers
        block_args = dict(hidden_size=config.d_model, num_heads=config.num_heads, head_dim=config.d_kv,
                          intermediate_size=config.d_ff, activation=activation, gated=gated,
                          dropout_rate=config.dropout_rate, epsilon=config.layer_norm_epsilon,
                          num_buckets=self.num_buckets, max_distance=self.max_distance, initializer_factor=factor)
        self.shared = T5SharedEmbedding(config.vocab_size, config.d_model, factor, dtype=self.dtype_policy,
                                        name="shared")
        self.encoder = T5Stack(config.num_layers, {**block_args, "is_decoder": False}, config.dropout_rate,
                               dtype=self.dtype_policy, name="encoder")
        self.decoder = T5Stack(self.num_decoder_layers, {**block_args, "is_decoder": True}, config.dropout_rate,
                               dtype=self.dtype_policy, name="decoder")
        self.lm_head = None if self.tie_lm_head else keras.layers.Dense(
            config.vocab_size, use_bias=False, kernel_initializer=_normal(factor), dtype=self.dtype_policy,
            name="lm_head")
        self.build()

    def build(self, input_shape=None):
        for layer in (self.shared, self.encoder, self.decoder):
            layer.build()
        if self.lm_head is not None:
            self.lm_head.build((None, self.d_model))
        self.built = True

    def ensure_built(self) -> None:
        if not self.built:
            self.build()

    def get_config(self):
        values = self.config.to_dict() if hasattr(self.config, "to_dict") else dict(vars(self.config))
        return {"name": self.name, "trainable": self.trainable, "dtype": keras.dtype_policies.serialize(
            self.dtype_policy), "config": values, "tie_lm_head": self.tie_lm_head}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    def get_input_embeddings(self):
        return self.shared

    def get_output_embeddings(self):
        return self.shared if self.lm_head is None else self.lm_head

    def get_encoder(self):
        return self._encode

    # --- forward ---
    def _encode(self, input_ids, attention_mask=None, output_attentions=False, output_hidden_states=False,
                training=False):
        input_ids = ops.convert_to_tensor(input_ids)
        positions = ops.arange(ops.shape(input_ids)[1], dtype="int32")
        mask = None if attention_mask is None else ops.cast(attention_mask, "bool")[:, None, None, :]
        result = self.encoder(self.shared(input_ids), positions, positions, self_mask=mask,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                              training=training)
        return EncoderOutput(last_hidden_state=result["last_hidden_state"], hidden_states=result["hidden_states"],
                             attentions=result["attentions"])

    def _logits(self, hidden):
        if self.scale_decoder_outputs:
            hidden = hidden * (self.d_model ** -0.5)
        logits = self.shared.project(hidden) if self.lm_head is None else self.lm_head(hidden)
        return ops.cast(logits, "float32")

    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
             encoder_outputs=None, past_key_values=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=False):
        if decoder_input_ids is None:
            raise ValueError("TFT5ForConditionalGeneration needs decoder_input_ids (the caller shifts the labels)")
        if encoder_outputs is None and input_ids is not None:
            encoder_outputs = self._encode(input_ids, attention_mask, output_attentions, output_hidden_states,
                                           training=training)
        elif isinstance(encoder_outputs, Mapping):
            encoder_outputs = EncoderOutput(**{k: encoder_outputs.get(k) for k in
                                               ("last_hidden_state", "hidden_states", "attentions")})
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = EncoderOutput(last_hidden_state=encoder_outputs[0])
        elif encoder_outputs is not None:
            encoder_outputs = EncoderOutput(last_hidden_state=encoder_outputs)
        encoder_hidden = None if encoder_outputs is None else encoder_outputs.last_hidden_state
        if encoder_hidden is None and past_key_values is None:
            raise ValueError("TFT5ForConditionalGeneration needs input_ids, encoder_outputs or past_key_values")

        decoder_input_ids = ops.convert_to_tensor(decoder_input_ids)
        past_length = 0 if past_key_values is None else ops.shape(past_key_values[0][0])[2]
        query_positions = past_length + ops.arange(ops.shape(decoder_input_ids)[1], dtype="int32")
        key_positions = ops.arange(past_length + ops.shape(decoder_input_ids)[1], dtype="int32")
        self_mask = (key_positions[None, :] <= query_positions[:, None])[None, None]
        if decoder_attention_mask is not None:
            self_mask = ops.logical_and(self_mask, ops.cast(decoder_attention_mask, "bool")[:, None, None, :])
        cross_mask = None if attention_mask is None else ops.cast(attention_mask, "bool")[:, None, None, :]
        if past_key_values is not None:
            cross = [(layer[2], layer[3]) for layer in past_key_values]
            past = [(layer[0], layer[1]) for layer in past_key_values]
        else:
            hidden = ops.cast(encoder_hidden, self.compute_dtype)
            cross = [block.cross_attention.project_key_value(hidden) for block in self.decoder.blocks]
            past = None
        result = self.decoder(self.shared(decoder_input_ids), query_positions, key_positions, self_mask=self_mask,
                              cross_key_values=cross, cross_mask=cross_mask, past_key_values=past,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                              training=training)
        present = None
        if use_cache:
            present = tuple((k, v, ck, cv) for (k, v), (ck, cv) in zip(result["self_key_values"], cross))
        return Seq2SeqLMOutput(
            logits=self._logits(result["last_hidden_state"]), past_key_values=present,
            decoder_hidden_states=result["hidden_states"], decoder_attentions=result["attentions"],
            cross_attentions=result["cross_attentions"], encoder_last_hidden_state=encoder_hidden,
            encoder_hidden_states=None if encoder_outputs is None else encoder_outputs.hidden_states,
            encoder_attentions=None if encoder_outputs is None else encoder_outputs.attentions)

    # --- static-cache decoding ---
    def init_cache(self, encoder_hidden, encoder_mask, max_length) -> dict:
        hidden = ops.cast(encoder_hidden, self.compute_dtype)
        cross = ops.stack([ops.stack(block.cross_attention.project_key_value(hidden), axis=0)
                           for block in self.decoder.blocks], axis=0)
        rows = ops.shape(hidden)[0]
        shape = (self.num_decoder_layers, 2, rows, self.num_heads, max_length, self.head_dim)
        return {"self": ops.zeros(shape, dtype=self.compute_dtype), "cross": cross}

    def decode_step(self, token_ids, cache, index, encoder_mask, training=False):
        # a static width of 1: a token sliced as ids[:, t:t + 1] inside an XLA loop has a dynamic width,
        # which XLA pads to its bound, and the cache write would then cover that many slots
        token_ids = ops.take(token_ids, ops.zeros((1,), "int32"), axis=1)
        index = ops.cast(index, "int32")
        key_positions = ops.arange(ops.shape(cache["self"])[4], dtype="int32")
        self_mask = (key_positions <= index)[None, None, None, :]
        cross_mask = None if encoder_mask is None else ops.cast(encoder_mask, "bool")[:, None, None, :]
        cross = [(cache["cross"][i, 0], cache["cross"][i, 1]) for i in range(self.num_decoder_layers)]
        layer_caches = [cache["self"][i] for i in range(self.num_decoder_layers)]
        result = self.decoder(self.shared(token_ids), ops.reshape(index, (1,)), key_positions, self_mask=self_mask,
                              cross_key_values=cross, cross_mask=cross_mask, cache=layer_caches, cache_index=index,
                              training=training)
        logits = self._logits(result["last_hidden_state"])[:, 0, :]
        return logits, {"self": ops.stack(result["self_key_values"], axis=0), "cross": cache["cross"]}

    # --- PyTorch weight names ---
    def pt_weight_table(self) -> list[WeightRow]:
        rows = [WeightRow("shared.weight", self.shared.embeddings, IDENTITY)]
        for side, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, block in enumerate(stack.blocks):
                base = f"{side}.block.{i}.layer"
                parts = [(f"{base}.0.SelfAttention", block.self_attention, block.self_attention_norm, f"{base}.0")]
                if block.is_decoder:
                    parts.append((f"{base}.1.EncDecAttention", block.cross_attention, block.cross_attention_norm,
                                  f"{base}.1"))
                for name, attention, norm, layer in parts:
                    rows += [WeightRow(f"{name}.{p}.weight", getattr(attention, p).kernel, TRANSPOSE) for p in "qkvo"]
                    if attention.has_relative_attention_bias:
                        rows.append(WeightRow(f"{name}.relative_attention_bias.weight",
                                              attention.relative_attention_bias, IDENTITY))
                    rows.append(WeightRow(f"{layer}.layer_norm.weight", norm.weight, IDENTITY))
                ff = f"{base}.{2 if block.is_decoder else 1}"
                feed_forward = block.feed_forward
                rows += [WeightRow(f"{ff}.DenseReluDense.{n}.weight", d.kernel, TRANSPOSE)
                         for n, d in zip(feed_forward.wi_names, feed_forward.wi)]
                rows.append(WeightRow(f"{ff}.DenseReluDense.wo.weight", feed_forward.wo.kernel, TRANSPOSE))
                rows.append(WeightRow(f"{ff}.layer_norm.weight", block.feed_forward_norm.weight, IDENTITY))
            rows.append(WeightRow(f"{side}.final_layer_norm.weight", stack.final_layer_norm.weight, IDENTITY))
        if self.lm_head is not None:
            rows.append(WeightRow("lm_head.weight", self.lm_head.kernel, TRANSPOSE))
        return rows

    def pt_weight_aliases(self) -> dict[str, str]:
        aliases = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
        if self.lm_head is None:
            aliases["lm_head.weight"] = "shared.weight"
        return aliases

"""BERT and DPR encoders in Keras 3, reading transformers' PyTorch weights by name.

`TFBertModel` is a post-norm BERT encoder (absolute position embeddings, bidirectional
self-attention) with an optional pooler (dense + tanh over the first token).
`TFDPRQuestionEncoder` / `TFDPRContextEncoder` wrap a pooler-less BERT: their pooled vector is the
first token's last hidden state, projected by `encode_proj` when `config.projection_dim > 0`.

All arithmetic runs in the layers' compute dtype, so mixed precision policies apply; softmax and
layer normalisation statistics are computed in float32. Every `call` traces under
`tf.function(jit_compile=True)`.
"""

from __future__ import annotations

from typing import Mapping

import keras
import tensorflow as tf
from keras import ops

from rag_tf.models.outputs import DPREncoderOutput, EncoderOutput
from rag_tf.models.weights import IDENTITY, TRANSPOSE, WeightRow


def _gelu_exact(x):
    return ops.gelu(x, approximate=False)


def _gelu_tanh(x):
    return ops.gelu(x, approximate=True)


def _quick_gelu(x):
    return x * ops.sigmoid(1.702 * x)


def _identity(x):
    return x


# transformers' ACT2FN names -> the same function; the tanh approximations only differ in rounding.
ACTIVATIONS = {
    "gelu": _gelu_exact,
    "gelu_python": _gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": ops.relu,
    "silu": ops.silu,
    "swish": ops.silu,
    "tanh": ops.tanh,
    "linear": _identity,
}


def check_bert_config(config) -> None:
    """Raise a ValueError naming the field for a BERT configuration these layers do not implement."""
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise ValueError(f"position_embedding_type={position_type!r} is not supported (only 'absolute')")
    if getattr(config, "is_decoder", False):
        raise ValueError("is_decoder=True is not supported: these are bidirectional encoders")
    if getattr(config, "add_cross_attention", False):
        raise ValueError("add_cross_attention=True is not supported: these are bidirectional encoders")
    if not isinstance(config.hidden_act, str) or config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"hidden_act={config.hidden_act!r} is not supported (one of {sorted(ACTIVATIONS)})")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size={config.hidden_size} is not a multiple of num_attention_heads={config.num_attention_heads}"
        )


def _mask_value(dtype) -> float:
    """The most negative finite value of `dtype` (a mask that cannot overflow in float16)."""
    return float(tf.as_dtype(keras.backend.standardize_dtype(dtype)).min)


class BertEmbeddings(keras.layers.Layer):
    """Word + token type + absolute position embeddings, then LayerNorm and dropout."""

    def __init__(self, vocab_size, hidden_size, max_positions, type_vocab_size, layer_norm_eps, dropout, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.hidden_size, self.max_positions = vocab_size, hidden_size, max_positions
        self.type_vocab_size, self.layer_norm_eps, self.dropout_rate = type_vocab_size, layer_norm_eps, dropout
        policy = self.dtype_policy
        self.word_embeddings = keras.layers.Embedding(vocab_size, hidden_size, dtype=policy, name="word_embeddings")
        self.position_embeddings = keras.layers.Embedding(
            max_positions, hidden_size, dtype=policy, name="position_embeddings")
        self.token_type_embeddings = keras.layers.Embedding(
            type_vocab_size, hidden_size, dtype=policy, name="token_type_embeddings")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_eps, dtype=policy, name="LayerNorm")
        self.dropout = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, input_shape=None):
        for embedding in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            embedding.build()
        self.layer_norm.build((None, None, self.hidden_size))

    def call(self, input_ids, token_type_ids, training=False):
        length = ops.shape(input_ids)[1]
        if isinstance(length, int) and length > self.max_positions:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings={self.max_positions}")
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(ops.arange(length)[None, :])
        return self.dropout(self.layer_norm(embeddings), training=training)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "max_positions": self.max_positions, "type_vocab_size": self.type_vocab_size,
                "layer_norm_eps": self.layer_norm_eps, "dropout": self.dropout_rate}


class BertLayer(keras.layers.Layer):
    """One post-norm encoder layer: self-attention, add & norm, feed-forward, add & norm."""

    def __init__(self, hidden_size, num_heads, intermediate_size, activation, layer_norm_eps, dropout,
                 attention_dropout, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.num_heads, self.intermediate_size = hidden_size, num_heads, intermediate_size
        self.activation, self.layer_norm_eps = activation, layer_norm_eps
        self.dropout_rate, self.attention_dropout_rate = dropout, attention_dropout
        self.head_dim = hidden_size // num_heads
        self.activation_fn = ACTIVATIONS[activation]
        policy = self.dtype_policy

        def dense(units, name):
            return keras.layers.Dense(units, dtype=policy, name=name)

        self.query, self.key, self.value = (dense(hidden_size, name) for name in ("query", "key", "value"))
        self.attention_dense = dense(hidden_size, "attention_output_dense")
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=policy, name="attention_output_LayerNorm")
        self.intermediate_dense = dense(intermediate_size, "intermediate_dense")
        self.output_dense = dense(hidden_size, "output_dense")
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=policy, name="output_LayerNorm")
        self.attention_dropout = keras.layers.Dropout(attention_dropout, dtype=policy)
        self.dropout = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, input_shape=None):
        hidden_shape = (None, None, self.hidden_size)
        for layer in (self.query, self.key, self.value, self.attention_dense, self.intermediate_dense):
            layer.build(hidden_shape)
        self.output_dense.build((None, None, self.intermediate_size))
        self.attention_norm.build(hidden_shape)
        self.output_norm.build(hidden_shape)

    def _split_heads(self, x):
        # (B, L, H) -> (B, heads, L, head_dim)
        x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, hidden_states, key_mask, training=False):
        """hidden_states (B, L, H); key_mask (B, 1, 1, L) bool, True where a key may be attended to."""
        query = self._split_heads(self.query(hidden_states))
        key = self._split_heads(self.key(hidden_states))
        value = self._split_heads(self.value(hidden_states))
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) * (self.head_dim ** -0.5)
        scores = ops.where(key_mask, scores, ops.cast(_mask_value(scores.dtype), scores.dtype))
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), self.compute_dtype)
        probs = self.attention_dropout(probs, training=training)
        context = ops.transpose(ops.matmul(probs, value), (0, 2, 1, 3))
        context = ops.reshape(context, ops.shape(hidden_states))
        attended = self.dropout(self.attention_dense(context), training=training)
        attended = self.attention_norm(attended + hidden_states)
        intermediate = self.activation_fn(self.intermediate_dense(attended))
        output = self.dropout(self.output_dense(intermediate), training=training)
        return self.output_norm(output + attended), probs

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "num_heads": self.num_heads,
                "intermediate_size": self.intermediate_size, "activation": self.activation,
                "layer_norm_eps": self.layer_norm_eps, "dropout": self.dropout_rate,
                "attention_dropout": self.attention_dropout_rate}


def _unpack_inputs(input_ids, attention_mask, token_type_ids):
    """Accept `{"input_ids": ..., "attention_mask": ..., "token_type_ids": ...}` as the first argument."""
    if isinstance(input_ids, Mapping):
        inputs = input_ids
        input_ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask", attention_mask)
        token_type_ids = inputs.get("token_type_ids", token_type_ids)
    return input_ids, attention_mask, token_type_ids


def _dense_rows(name, layer):
    return [WeightRow(f"{name}.weight", layer.kernel, TRANSPOSE), WeightRow(f"{name}.bias", layer.bias, IDENTITY)]


def _norm_rows(name, layer):
    return [WeightRow(f"{name}.weight", layer.gamma, IDENTITY), WeightRow(f"{name}.bias", layer.beta, IDENTITY)]


class TFBertModel(keras.Model):
    """BERT encoder (transformers' `BertModel`): `call` returns an `EncoderOutput` whose
    `pooler_output` is tanh(dense(first token)) with the pooler, None without."""

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        check_bert_config(config)
        super().__init__(**kwargs)
        self.config = config
        self.add_pooling_layer = add_pooling_layer
        policy = self.dtype_policy
        self.embeddings = BertEmbeddings(
            config.vocab_size, config.hidden_size, config.max_position_embeddings, config.type_vocab_size,
            config.layer_norm_eps, config.hidden_dropout_prob, dtype=policy, name="embeddings")
        self.encoder_layers = [
            BertLayer(config.hidden_size, config.num_attention_heads, config.intermediate_size, config.hidden_act,
                      config.layer_norm_eps, config.hidden_dropout_prob, config.attention_probs_dropout_prob,
                      dtype=policy, name=f"layer_{i}")
            for i in range(config.num_hidden_layers)
        ]
        self.pooler = (keras.layers.Dense(config.hidden_size, activation="tanh", dtype=policy, name="pooler")
                       if add_pooling_layer else None)

    def build(self, input_shape=None):
        self.embeddings.build()
        for layer in self.encoder_layers:
            layer.build()
        if self.pooler is not None:
            self.pooler.build((None, self.config.hidden_size))

    def ensure_built(self) -> None:
        """Create every variable (idempotent)."""
        if not self.built:
            self.build()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def call(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=False,
             output_hidden_states=False, training=False):
        input_ids, attention_mask, token_type_ids = _unpack_inputs(input_ids, attention_mask, token_type_ids)
        if attention_mask is None:
            attention_mask = ops.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = ops.zeros_like(input_ids)
        key_mask = ops.not_equal(attention_mask, 0)[:, None, None, :]
        hidden = self.embeddings(input_ids, token_type_ids, training=training)
        all_hidden, all_attentions = (hidden,), ()
        for layer in self.encoder_layers:
            hidden, probs = layer(hidden, key_mask, training=training)
            all_hidden += (hidden,)
            all_attentions += (probs,)
        pooled = self.pooler(hidden[:, 0]) if self.pooler is not None else None
        return EncoderOutput(
            last_hidden_state=hidden,
            pooler_output=pooled,
            hidden_states=all_hidden if output_hidden_states else None,
            attentions=all_attentions if output_attentions else None,
        )

    def pt_weight_table(self) -> list:
        """One row per variable, named as in `BertModel.state_dict()`."""
        self.ensure_built()
        emb = self.embeddings
        rows = [
            WeightRow("embeddings.word_embeddings.weight", emb.word_embeddings.embeddings),
            WeightRow("embeddings.position_embeddings.weight", emb.position_embeddings.embeddings),
            WeightRow("embeddings.token_type_embeddings.weight", emb.token_type_embeddings.embeddings),
            *_norm_rows("embeddings.LayerNorm", emb.layer_norm),
        ]
        for i, layer in enumerate(self.encoder_layers):
            name = f"encoder.layer.{i}"
            rows += _dense_rows(f"{name}.attention.self.query", layer.query)
            rows += _dense_rows(f"{name}.attention.self.key", layer.key)
            rows += _dense_rows(f"{name}.attention.self.value", layer.value)
            rows += _dense_rows(f"{name}.attention.output.dense", layer.attention_dense)
            rows += _norm_rows(f"{name}.attention.output.LayerNorm", layer.attention_norm)
            rows += _dense_rows(f"{name}.intermediate.dense", layer.intermediate_dense)
            rows += _dense_rows(f"{name}.output.dense", layer.output_dense)
            rows += _norm_rows(f"{name}.output.LayerNorm", layer.output_norm)
        if self.pooler is not None:
            rows += _dense_rows("pooler.dense", self.pooler)
        return rows

    def pt_weight_aliases(self) -> dict:
        return {}

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict(), "add_pooling_layer": self.add_pooling_layer}


class _TFDPREncoder(keras.Model):
    """A pooler-less BERT (`bert_model`) whose pooled vector is the first token's last hidden state,
    projected to `projection_dim` by `encode_proj` when `projection_dim > 0`."""

    pt_prefix = ""  # "question_encoder." or "ctx_encoder."

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        policy = self.dtype_policy
        self.bert_model = TFBertModel(config, add_pooling_layer=False, dtype=policy, name="bert_model")
        projection_dim = getattr(config, "projection_dim", 0) or 0
        self.encode_proj = (keras.layers.Dense(projection_dim, dtype=policy, name="encode_proj")
                            if projection_dim > 0 else None)

    def build(self, input_shape=None):
        self.bert_model.ensure_built()
        if self.encode_proj is not None:
            self.encode_proj.build((None, self.config.hidden_size))

    def ensure_built(self) -> None:
        """Create every variable (idempotent)."""
        if not self.built:
            self.build()

    def get_input_embeddings(self):
        return self.bert_model.get_input_embeddings()

    def call(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=False,
             output_hidden_states=False, training=False):
        input_ids, attention_mask, token_type_ids = _unpack_inputs(input_ids, attention_mask, token_type_ids)
        pad_token_id = getattr(self.config, "pad_token_id", None)
        if attention_mask is None and pad_token_id is not None:
            # as transformers' DPR encoders: without a mask, padding tokens are not attended to
            attention_mask = ops.cast(ops.not_equal(input_ids, pad_token_id), "int32")
        outputs = self.bert_model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                  output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                  training=training)
        pooled = outputs.last_hidden_state[:, 0]
        if self.encode_proj is not None:
            pooled = self.encode_proj(pooled)
        return DPREncoderOutput(pooler_output=pooled, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions, last_hidden_state=outputs.last_hidden_state)

    def pt_weight_table(self) -> list:
        """One row per variable, named as in the DPR encoder's `state_dict()`."""
        self.ensure_built()
        prefix = self.pt_prefix
        rows = [WeightRow(f"{prefix}bert_model.{row.pt_name}", row.variable, row.transform)
                for row in self.bert_model.pt_weight_table()]
        if self.encode_proj is not None:
            rows += _dense_rows(f"{prefix}encode_proj", self.encode_proj)
        return rows

    def pt_weight_aliases(self) -> dict:
        return {}

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}


class TFDPRQuestionEncoder(_TFDPREncoder):
    """transformers' `DPRQuestionEncoder`: weights under `question_encoder.`."""

    pt_prefix = "question_encoder."


class TFDPRContextEncoder(_TFDPREncoder):
    """transformers' `DPRContextEncoder`: weights under `ctx_encoder.`."""

    pt_prefix = "ctx_encoder."

"""`TFRagModel`: question encoder + retriever + generator, without a loss."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from rag_core.arguments import (
    RagInputError,
    TensorInfo,
    check_context_inputs,
    check_tensor_inputs,
    generator_max_positions,
    question_encoder_max_positions,
    resolve,
    resolve_n_docs,
)
from rag_core.configuration_rag import RagConfig
from rag_core.modeling import context_encoder_pooling, missing_pooler_error, pooling_kind, resolve_config
from rag_core.outputs import RetrievAugLMOutput

from . import retrieval_bridge
from .models import registry
from .rag_pretrained_model import TFRagPreTrainedModel, unpack_mapping_input


def _static_shape(tensor, rank: int = 2) -> Optional[tuple]:
    """The static shape (None for unknown dimensions); an unknown rank reads as `rank` unknowns."""
    if tensor is None:
        return None
    shape = tf.TensorShape(getattr(tensor, "shape", None))
    return tuple(shape.as_list()) if shape.rank is not None else (None,) * rank


def tensor_info(name: str, value: Any) -> Optional[TensorInfo]:
    """What the shared input checks read of a tensor argument: static shape (None: unknown) and dtype name.

    Tensors, numpy arrays and Keras symbolic tensors are read as they are; nested lists through numpy."""
    if value is None:
        return None
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        try:
            value = np.asarray(value)
        except ValueError as err:  # a ragged nested list
            raise RagInputError(f"`{name}` is not a rectangular array ({err})") from None
    shape = tf.TensorShape(value.shape)
    dtype = getattr(value.dtype, "name", None) or str(value.dtype)
    return TensorInfo(tuple(shape.as_list()) if shape.rank is not None else None, dtype)


def check_inputs(config: RagConfig, **tensors: Any) -> None:
    """The shared shape and dtype checks (`rag_core.arguments.check_tensor_inputs`) on tensor arguments."""
    check_tensor_inputs(
        {name: tensor_info(name, value) for name, value in tensors.items()},
        generator_positions=generator_max_positions(config.generator),
        question_positions=question_encoder_max_positions(config.question_encoder),
    )


def pool_encoder_output(outputs: Any, attention_mask, pooling: str) -> tf.Tensor:
    """The `(B, D)` vector of an encoder output under a pooling name (see `RagConfig.question_encoder_pooling`)."""
    kind = pooling_kind(pooling)
    if kind == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise missing_pooler_error(pooling)
        return pooled
    hidden = outputs.last_hidden_state
    if kind == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return tf.reduce_mean(hidden, axis=1)
    mask = tf.cast(attention_mask, hidden.dtype)[:, :, None]
    return tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)


class TFRagModel(TFRagPreTrainedModel):
    """RAG without a head: encodes the question, retrieves, scores the passages and runs the generator
    on every (passage, question) pair. Returns `rag_core.RetrievAugLMOutput`.

    Either give a retriever (`retriever=` or `set_retriever`) and `input_ids`, or give the context
    yourself (`context_input_ids`, `context_attention_mask`, `doc_scores`).

        >>> model = TFRagModel(config, retriever=retriever)                    # doctest: +SKIP
        >>> out = model(input_ids, attention_mask=mask, decoder_input_ids=d)    # doctest: +SKIP
        >>> out.logits.shape, out.doc_scores.shape   # (B*N, T, V), (B, N)     # doctest: +SKIP
    """

    def __init__(
        self,
        config: Optional[RagConfig] = None,
        question_encoder: Any = None,
        generator: Any = None,
        retriever: Any = None,
        **kwargs,
    ):
        # === Config ===
        config = resolve_config(config, question_encoder, generator)
        super().__init__(config, **kwargs)
        if question_encoder is None or generator is None:
            registry.check_supported(config)

        # === Submodules ===
        if question_encoder is None:
            question_encoder = registry.build_question_encoder(config.question_encoder, name="question_encoder")
        if generator is None:
            generator = registry.build_generator(config.generator, name="generator")
        self.question_encoder = question_encoder
        self.generator = generator
        if getattr(generator, "generation_config", None) is None:
            # RAG-Sequence decodes with the generator's own generation settings, as the original does
            from transformers import GenerationConfig

            generator.generation_config = GenerationConfig.from_model_config(config.generator)

        # === Retrieval ===
        self.retriever = retriever
        self.context_encoder_training = False
        self.ctx_encoder = None

    def set_retriever(self, retriever: Any) -> None:
        self.retriever = retriever

    def set_context_encoder_for_training(self, ctx_encoder: Any) -> None:
        """Train the passage encoder end to end: passage vectors are recomputed by `ctx_encoder` from
        the retriever's `tokenized_doc_ids` inside `call`, so gradients reach it through `doc_scores`.
        The retriever needs a context-encoder tokenizer (`retriever.set_ctx_encoder_tokenizer`)."""
        self.context_encoder_training = True
        self.ctx_encoder = ctx_encoder

    def encode_question(self, input_ids, attention_mask=None):
        """`(B, D)` question vectors, pooled per `config.resolved_question_encoder_pooling`."""
        return self._encode_question(input_ids, attention_mask)[0]

    def _encode_question(self, input_ids, attention_mask=None, output_attentions=None, output_hidden_states=None,
                         training=False):
        """(vectors, the question encoder's outputs)."""
        outputs = self.question_encoder(
            input_ids,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        return pool_encoder_output(outputs, attention_mask, self.config.resolved_question_encoder_pooling), outputs

    @unpack_mapping_input
    def call(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_outputs=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        past_key_values=None,
        doc_scores=None,
        context_input_ids=None,
        context_attention_mask=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        output_retrieved=None,
        n_docs=None,
        training=False,
    ) -> RetrievAugLMOutput:
        """Retrieve (unless contexts are given), score the passages and run the generator on every context.

        `decoder_input_ids` are given per question, `(B, T)`; they are repeated for each passage.
        """
        config = self.config
        check_inputs(
            config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, doc_scores=doc_scores, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask,
        )
        use_cache = resolve(use_cache, config.use_cache)
        output_attentions = resolve(output_attentions, config.output_attentions)
        output_hidden_states = resolve(output_hidden_states, config.output_hidden_states)
        output_retrieved = resolve(output_retrieved, config.output_retrieved)
        arguments = dict(
            input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
            past_key_values=past_key_values, doc_scores=doc_scores, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, output_retrieved=output_retrieved, n_docs=n_docs,
            training=training,
        )
        if self._call_as_graph(arguments):
            return self._graph_call(arguments)
        n_docs_explicit = n_docs is not None
        n_docs = resolve_n_docs(n_docs, config.n_docs)

        retrieved = None
        if self._has_to_retrieve(context_input_ids, context_attention_mask, doc_scores, encoder_outputs):
            retrieved = self._retrieve(input_ids, attention_mask, n_docs, output_attentions, output_hidden_states,
                                       training)
            context_input_ids = retrieved["context_input_ids"]
            context_attention_mask = retrieved["context_attention_mask"]
            doc_scores = retrieved["doc_scores"]
        elif encoder_outputs is None:
            n_docs = self._check_context(input_ids, context_input_ids, context_attention_mask, doc_scores, n_docs,
                                         n_docs_explicit)
            if context_attention_mask is None:  # as in rag_pt: every non-pad token of the given context
                pad = self.config.generator.pad_token_id
                context_attention_mask = tf.cast(tf.not_equal(context_input_ids, pad), context_input_ids.dtype)
        elif doc_scores is None:
            raise RagInputError("`doc_scores` are required when `encoder_outputs` are given")

        if decoder_input_ids is not None:
            decoder_input_ids = tf.repeat(decoder_input_ids, n_docs, axis=0)
        if decoder_attention_mask is not None:
            decoder_attention_mask = tf.repeat(decoder_attention_mask, n_docs, axis=0)

        gen_outputs = self.generator(
            input_ids=context_input_ids,
            attention_mask=context_attention_mask,
            encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )

        outputs = RetrievAugLMOutput(
            logits=gen_outputs.logits,
            doc_scores=doc_scores,
            past_key_values=gen_outputs.past_key_values if use_cache else None,
            generator_enc_last_hidden_state=gen_outputs.encoder_last_hidden_state,
            generator_enc_hidden_states=gen_outputs.encoder_hidden_states,
            generator_enc_attentions=gen_outputs.encoder_attentions,
            generator_dec_hidden_states=gen_outputs.decoder_hidden_states,
            generator_dec_attentions=gen_outputs.decoder_attentions,
            generator_cross_attentions=gen_outputs.cross_attentions,
        )
        return add_retrieved_fields(outputs, retrieved, output_retrieved)

    def _check_context(self, input_ids, context_input_ids, context_attention_mask, doc_scores, n_docs: int,
                       n_docs_explicit: bool) -> int:
        """Check given context tensors against each other and `n_docs` (static shapes); the batch size."""
        return check_context_inputs(
            n_docs=n_docs,
            context_input_ids_shape=_static_shape(context_input_ids),
            context_attention_mask_shape=_static_shape(context_attention_mask),
            doc_scores_shape=_static_shape(doc_scores),
            batch_size=None if input_ids is None else _static_shape(input_ids)[0],
            n_docs_explicit=n_docs_explicit,
        )

    def _has_to_retrieve(self, context_input_ids, context_attention_mask, doc_scores, encoder_outputs) -> bool:
        """Retrieve only when no context was given (as rag_pt). The original also retrieved when the mask
        or `doc_scores` were missing, silently replacing the caller's `context_input_ids`; here a given
        context is always used: a missing mask is derived from the pad id, missing `doc_scores` raise."""
        return self.retriever is not None and context_input_ids is None and encoder_outputs is None

    def _retrieve(self, input_ids, attention_mask, n_docs: int, output_attentions, output_hidden_states,
                  training) -> dict:
        """Encode the questions, retrieve `n_docs` passages each and score them: the part of `call`
        before the generator (eager `call` runs it eagerly, the rest as a graph)."""
        if input_ids is None:
            raise RagInputError(
                "`input_ids` (the questions) are required to retrieve; or pass context_input_ids, "
                "context_attention_mask and doc_scores"
            )
        question_vectors, question_outputs = self._encode_question(
            input_ids, attention_mask, output_attentions, output_hidden_states, training=training
        )
        retrieved = retrieval_bridge.retrieve(
            self.retriever,
            input_ids,
            question_vectors,
            prefix=getattr(self.generator.config, "prefix", None),
            n_docs=n_docs,
            with_tokenized_docs=self.context_encoder_training,
        )
        if self.context_encoder_training:
            retrieved["retrieved_doc_embeds"] = self._encode_passages(
                retrieved, n_docs, question_vectors.shape[-1], training)
        retrieved["doc_scores"] = retrieval_bridge.score_documents(
            question_vectors, retrieved["retrieved_doc_embeds"], retrieved["doc_ids"])
        retrieved["question_vectors"] = question_vectors
        retrieved["question_outputs"] = question_outputs
        return retrieved

    def _encode_passages(self, retrieved: dict, n_docs: int, dim: int, training: bool) -> tf.Tensor:
        """`(B, N, D)` passage vectors from the trainable context encoder (end-to-end training)."""
        mask = retrieved["tokenized_doc_attention_mask"]
        outputs = self.ctx_encoder(retrieved["tokenized_doc_ids"], attention_mask=mask, training=training)
        pooling = context_encoder_pooling(self.config, getattr(getattr(self.ctx_encoder, "config", None), "model_type",
                                                               None))
        return tf.reshape(pool_encoder_output(outputs, mask, pooling), [-1, n_docs, dim])

    def build(self, input_shape=None):
        self.ensure_built()


def add_retrieved_fields(outputs, retrieved: Optional[dict], output_retrieved: bool):
    """Fill the question-encoder and (with `output_retrieved`) retrieval fields of `outputs` in place."""
    if retrieved is None:
        return outputs
    question_outputs = retrieved["question_outputs"]
    outputs.question_encoder_last_hidden_state = retrieved["question_vectors"]
    outputs.question_enc_hidden_states = getattr(question_outputs, "hidden_states", None)
    outputs.question_enc_attentions = getattr(question_outputs, "attentions", None)
    if output_retrieved:
        outputs.retrieved_doc_embeds = retrieved["retrieved_doc_embeds"]
        outputs.retrieved_doc_ids = retrieved["doc_ids"]
        outputs.context_input_ids = retrieved["context_input_ids"]
        outputs.context_attention_mask = retrieved["context_attention_mask"]
    return outputs

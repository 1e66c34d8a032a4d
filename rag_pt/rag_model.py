"""`RagModel`: question encoder + retriever + generator, without a loss.

It encodes the questions, retrieves `n_docs` passages per question, scores them against the
question vector and runs the generator on every (passage, question) context. With precomputed
`context_input_ids` and `doc_scores` it needs neither a retriever nor the questions.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from transformers import AutoModel, AutoModelForSeq2SeqLM, PreTrainedModel

from rag_core import RagConfig, RetrievAugLMOutput, compat
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
from rag_core.modeling import context_encoder_pooling, missing_pooler_error, pooling_kind, resolve_config

from . import retrieval_bridge
from .rag_pretrained_model import RagPreTrainedModel


def tensor_info(name: str, value: Any) -> Optional[TensorInfo]:
    """What the shared input checks read of a tensor argument: static shape and dtype name."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise RagInputError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    return TensorInfo(tuple(value.shape), str(value.dtype).removeprefix("torch."))


def check_inputs(config: RagConfig, **tensors: Any) -> None:
    """The shared shape and dtype checks (`rag_core.arguments.check_tensor_inputs`) on tensor arguments."""
    check_tensor_inputs(
        {name: tensor_info(name, value) for name, value in tensors.items()},
        generator_positions=generator_max_positions(config.generator),
        question_positions=question_encoder_max_positions(config.question_encoder),
    )


def pool_encoder_output(outputs: Any, attention_mask: Optional[Tensor], pooling: str) -> Tensor:
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
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class RagModel(RagPreTrainedModel):
    """The RAG backbone: `forward` returns per-passage generator logits and the passage scores.

    Example:
        >>> model = RagModel(config, retriever=retriever)
        >>> out = model(input_ids=questions["input_ids"], decoder_input_ids=labels)
        >>> out.logits.shape, out.doc_scores.shape      # (B * n_docs, T, V), (B, n_docs)
    """

    def __init__(
        self,
        config: Optional[RagConfig] = None,
        question_encoder: Optional[PreTrainedModel] = None,
        generator: Optional[PreTrainedModel] = None,
        retriever: Any = None,
        **kwargs,
    ):
        # === Config ===
        config = resolve_config(config, question_encoder, generator, kwargs)
        super().__init__(config)

        # === Submodules ===
        self.question_encoder = (
            question_encoder if question_encoder is not None else AutoModel.from_config(config.question_encoder)
        )
        self.generator = generator if generator is not None else AutoModelForSeq2SeqLM.from_config(config.generator)

        # === Retrieval (the retriever holds no weights; the context encoder is trained only on request) ===
        self.retriever = retriever
        self.ctx_encoder = None
        self.context_encoder_training = False
        # transformers 5 expects it (it records the tied weights that saving and loading rely on); on 4.x
        # it leaves ready sub-models as they are (their weights are marked initialised)
        self.post_init()

    def set_retriever(self, retriever: Any) -> None:
        self.retriever = retriever

    def set_context_encoder_for_training(self, ctx_encoder: PreTrainedModel) -> None:
        """Recompute passage vectors with `ctx_encoder` in `forward`, so training updates it too.

        The retriever must return `tokenized_doc_ids` (give it the context encoder's tokenizer).
        The index itself is not re-encoded: retrieval still uses the stored vectors.
        """
        self.ctx_encoder = ctx_encoder
        self.context_encoder_training = True

    def encode_question(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        """The `(B, D)` question vectors used for retrieval and scoring."""
        return self._encode_question(input_ids, attention_mask)[0]

    def _encode_question(
        self, input_ids: Tensor, attention_mask: Optional[Tensor], output_attentions: bool = False, output_hidden_states: bool = False
    ) -> tuple[Tensor, Any]:
        outputs = self.question_encoder(
            input_ids,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        return pool_encoder_output(outputs, attention_mask, self.config.resolved_question_encoder_pooling), outputs

    def _encode_passages(self, retrieved: retrieval_bridge.Retrieved, batch_size: int, n_docs: int) -> Tensor:
        if retrieved.tokenized_doc_ids is None:
            raise RagInputError(
                "context-encoder training needs the retriever to return `tokenized_doc_ids`: give the retriever "
                "the context encoder's tokenizer"
            )
        outputs = self.ctx_encoder(
            retrieved.tokenized_doc_ids, attention_mask=retrieved.tokenized_doc_attention_mask, return_dict=True
        )
        pooling = context_encoder_pooling(self.config, getattr(self.ctx_encoder.config, "model_type", None))
        vectors = pool_encoder_output(outputs, retrieved.tokenized_doc_attention_mask, pooling)
        return vectors.view(batch_size, n_docs, -1)

    def forward(
        self,
        input_ids: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        encoder_outputs: Optional[Any] = None,
        decoder_input_ids: Optional[Tensor] = None,
        decoder_attention_mask: Optional[Tensor] = None,
        past_key_values: Optional[Any] = None,
        doc_scores: Optional[Tensor] = None,
        context_input_ids: Optional[Tensor] = None,
        context_attention_mask: Optional[Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        output_retrieved: Optional[bool] = None,
        n_docs: Optional[int] = None,
    ) -> RetrievAugLMOutput:
        """Retrieve (unless contexts are given), score the passages and run the generator on every context.

        `decoder_input_ids` are given per question, `(B, T)`; they are repeated for each passage.
        `encoder_outputs` (generator-encoder states of the `B*N` contexts) skip the generator's encoder,
        as during generation; `doc_scores` must come with them.
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
        n_docs_explicit = n_docs is not None
        n_docs = resolve_n_docs(n_docs, config.n_docs)

        question_vectors = question_outputs = retrieved = doc_embeds = None
        has_to_retrieve = self.retriever is not None and context_input_ids is None and encoder_outputs is None
        if has_to_retrieve:
            if input_ids is None:
                raise RagInputError("`input_ids` (the questions) are required to retrieve passages")
            question_vectors, question_outputs = self._encode_question(
                input_ids, attention_mask, output_attentions, output_hidden_states
            )
            retrieved = retrieval_bridge.retrieve(
                self.retriever, input_ids, question_vectors, prefix=generator_prefix(self.generator), n_docs=n_docs
            )
            doc_embeds = retrieved.doc_embeds
            if self.context_encoder_training:
                doc_embeds = self._encode_passages(retrieved, input_ids.shape[0], n_docs)
            doc_scores = retrieval_bridge.score_documents(question_vectors, doc_embeds, retrieved.doc_ids)
            context_input_ids = retrieved.context_input_ids
            context_attention_mask = retrieved.context_attention_mask
        elif encoder_outputs is not None:
            if doc_scores is None:
                raise RagInputError("`doc_scores` are required with precomputed `encoder_outputs`")
            n_docs = check_context_inputs(
                n_docs=n_docs,
                context_input_ids_shape=tuple(_encoder_states(encoder_outputs).shape[:2]),
                context_attention_mask_shape=None,
                doc_scores_shape=tuple(doc_scores.shape),
                n_docs_explicit=n_docs_explicit,
            )
        else:
            n_docs = check_context_inputs(
                n_docs=n_docs,
                context_input_ids_shape=tuple(context_input_ids.shape) if context_input_ids is not None else None,
                context_attention_mask_shape=(
                    tuple(context_attention_mask.shape) if context_attention_mask is not None else None
                ),
                doc_scores_shape=tuple(doc_scores.shape) if doc_scores is not None else None,
                batch_size=input_ids.shape[0] if input_ids is not None else None,
                n_docs_explicit=n_docs_explicit,
            )
            if context_attention_mask is None:
                context_attention_mask = context_input_ids.ne(self.config.generator.pad_token_id).long()

        if decoder_input_ids is not None:
            decoder_input_ids = decoder_input_ids.repeat_interleave(n_docs, dim=0)
        if decoder_attention_mask is not None:
            decoder_attention_mask = decoder_attention_mask.repeat_interleave(n_docs, dim=0)

        gen_outputs = self.generator(
            input_ids=context_input_ids if encoder_outputs is None else None,
            attention_mask=context_attention_mask,
            encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **compat.cache_kwargs(past_key_values),
        )

        show_retrieved = retrieved is not None and output_retrieved
        return RetrievAugLMOutput(
            logits=gen_outputs.logits,
            doc_scores=doc_scores,
            past_key_values=compat.output_cache(gen_outputs) if use_cache else None,
            # with context-encoder training: the passage vectors it computed (those the scores used)
            retrieved_doc_embeds=doc_embeds if show_retrieved else None,
            retrieved_doc_ids=retrieved.doc_ids if show_retrieved else None,
            context_input_ids=context_input_ids if show_retrieved else None,
            context_attention_mask=context_attention_mask if show_retrieved else None,
            question_encoder_last_hidden_state=question_vectors,
            question_enc_hidden_states=question_outputs.hidden_states if question_outputs is not None else None,
            question_enc_attentions=question_outputs.attentions if question_outputs is not None else None,
            generator_enc_last_hidden_state=gen_outputs.encoder_last_hidden_state,
            generator_enc_hidden_states=gen_outputs.encoder_hidden_states,
            generator_enc_attentions=gen_outputs.encoder_attentions,
            generator_dec_hidden_states=gen_outputs.decoder_hidden_states,
            generator_dec_attentions=gen_outputs.decoder_attentions,
            generator_cross_attentions=gen_outputs.cross_attentions,
        )


def generator_prefix(generator: PreTrainedModel) -> Optional[str]:
    """The generator's task prefix (T5's "summarize: "...); transformers 5 configs have no `prefix` unless set."""
    return getattr(generator.config, "prefix", None)


def _encoder_states(encoder_outputs: Any) -> Tensor:
    if isinstance(encoder_outputs, (tuple, list)):
        return encoder_outputs[0]
    return encoder_outputs.last_hidden_state

"""`RagTokenForGeneration`: a passage per token, `p(y|x) = prod_t sum_z p(z|x) p(y_t|x, z, y_<t)`.

`generate` is transformers' `GenerationMixin.generate`: greedy, beam search, sampling, logits
processors and stopping criteria all come from there. What RAG adds is the step function: the
model's "logits" at each step are the log-probabilities marginalised over the passages, one row
per (question, beam); the generator underneath runs on one row per (question, beam, passage).

How the shapes line up with GenerationMixin: the encoder runs once on the `B*N` contexts and its
states are handed to `generate` as `(B, N, L, H)` (mask `(B, N, L)`, scores `(B, N)`), so that
GenerationMixin's expansion for beams (`repeat_interleave` on dim 0) yields `(B*beams, N, ...)`,
which flattens to the `(question, beam, passage)` row order of the decoder cache. When beam search
reorders its `B*beams` rows, `_reorder_cache` moves each row's `N` passage rows together.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from rag_core import RagConfig, RetrievAugLMMarginOutput, compat
from rag_core.arguments import (
    check_generate_inputs,
    check_generate_options,
    generator_max_positions,
    resolve,
    resolve_bos_token_id,
    resolve_n_docs,
)

from . import generation_utils, losses
from .rag_model import check_inputs
from .rag_pretrained_model import _RagHead


class RagTokenForGeneration(_RagHead, GenerationMixin):
    """RAG-Token: forward with `labels` gives the loss; `generate` is GenerationMixin's, on marginal log-probs.

    Example:
        >>> model = RagTokenForGeneration(config, retriever=retriever)
        >>> loss = model(input_ids=q["input_ids"], labels=answers["input_ids"]).loss
        >>> ids = model.generate(input_ids=q["input_ids"], num_beams=4, max_new_tokens=20)
    """

    def __init__(
        self,
        config: Optional[RagConfig] = None,
        question_encoder: Optional[PreTrainedModel] = None,
        generator: Optional[PreTrainedModel] = None,
        retriever: Any = None,
        **kwargs,
    ):
        super().__init__(config=config, question_encoder=question_encoder, generator=generator, retriever=retriever, **kwargs)

    def forward(
        self,
        input_ids: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        encoder_outputs: Optional[Any] = None,
        decoder_input_ids: Optional[Tensor] = None,
        decoder_attention_mask: Optional[Tensor] = None,
        past_key_values: Optional[Any] = None,
        context_input_ids: Optional[Tensor] = None,
        context_attention_mask: Optional[Tensor] = None,
        doc_scores: Optional[Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        output_retrieved: Optional[bool] = None,
        do_marginalize: Optional[bool] = None,
        reduce_loss: Optional[bool] = None,
        labels: Optional[Tensor] = None,
        n_docs: Optional[int] = None,
        exclude_bos_score: Optional[bool] = None,
        **kwargs,
    ) -> RetrievAugLMMarginOutput:
        """As `RagModel.forward`; with `labels`, also the loss. `do_marginalize=True` returns `(B, T, V)`
        marginal log-probabilities as `logits` instead of the per-passage `(B*N, T, V)` logits."""
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, labels=labels, doc_scores=doc_scores,
            context_input_ids=context_input_ids, context_attention_mask=context_attention_mask,
        )
        do_marginalize = resolve(do_marginalize, self.config.do_marginalize)
        reduce_loss = resolve(reduce_loss, self.config.reduce_loss)
        exclude_bos_score = resolve(exclude_bos_score, self.config.exclude_bos_score)
        if labels is not None:
            self._check_labels(labels)
            if decoder_input_ids is None:
                decoder_input_ids = labels
            use_cache = False

        outputs = self.rag(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            past_key_values=past_key_values,
            doc_scores=doc_scores,
            context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_retrieved=output_retrieved,
            n_docs=n_docs,
        )
        n_docs = outputs.doc_scores.shape[1]
        loss = None
        if labels is not None:
            loss = self.get_nll(
                outputs.logits,
                outputs.doc_scores,
                labels,
                reduce_loss=reduce_loss,
                epsilon=self.config.label_smoothing,
                exclude_bos_score=exclude_bos_score,
                n_docs=n_docs,
            )
        fields = dict(outputs.items())
        if do_marginalize:
            fields["logits"] = self.marginalize(outputs.logits, outputs.doc_scores, n_docs)
        return RetrievAugLMMarginOutput(loss=loss, **fields)

    def marginalize(self, seq_logits: Tensor, doc_scores: Tensor, n_docs: Optional[int] = None) -> Tensor:
        """`(B*N, T, V)` logits to `(B, T, V)` log-probabilities marginalised over the passages."""
        return losses.marginalize_token_logprobs(seq_logits, doc_scores, resolve_n_docs(n_docs, self.config.n_docs))

    def get_nll(
        self,
        seq_logits: Tensor,
        doc_scores: Tensor,
        target: Tensor,
        reduce_loss: bool = False,
        epsilon: float = 0.0,
        exclude_bos_score: bool = False,
        n_docs: Optional[int] = None,
    ) -> Tensor:
        """Negative log-likelihood under the per-token marginal, `(B,)` or `()` if reduced."""
        return losses.token_nll(
            seq_logits,
            doc_scores,
            target,
            n_docs=resolve_n_docs(n_docs, self.config.n_docs),
            pad_token_id=self.config.generator.pad_token_id,
            reduce_loss=reduce_loss,
            epsilon=epsilon,
            exclude_bos_score=exclude_bos_score,
            bos_token_id=resolve_bos_token_id(self.config),
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        context_input_ids: Optional[Tensor] = None,
        context_attention_mask: Optional[Tensor] = None,
        doc_scores: Optional[Tensor] = None,
        n_docs: Optional[int] = None,
        generation_config: Optional[GenerationConfig] = None,
        prefix_allowed_tokens_fn: Optional[Callable[[int, Tensor], list[int]]] = None,
        logits_processor: Optional[LogitsProcessorList] = None,
        stopping_criteria: Optional[StoppingCriteriaList] = None,
        output_provenance: bool = False,
        **kwargs,
    ) -> Any:
        """Retrieve (or take the given contexts), encode each context once, then `GenerationMixin.generate`.

        Every generation argument works as for any transformers model (`num_beams`, `do_sample`,
        `num_return_sequences`, `max_new_tokens`, `min_length`, `no_repeat_ngram_size`, ...).
        Returns ids `(B * num_return_sequences, S)`, the usual `Generate*Output` with
        `return_dict_in_generate=True`, or with `output_provenance=True` a `RetrievAugGenerateOutput`.
        """
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask, doc_scores=doc_scores,
        )
        check_generate_options(
            generation_config if generation_config is not None else self.generation_config, kwargs,
            max_positions=generator_max_positions(self.config.generator),
        )
        check_generate_inputs(
            has_input_ids=input_ids is not None,
            has_context=context_input_ids is not None,
            has_retriever=self.retriever is not None,
        )
        context = generation_utils.prepare_context(
            self.rag, input_ids, attention_mask, context_input_ids, context_attention_mask, doc_scores, n_docs
        )
        batch_size, n_docs = context.doc_scores.shape
        encoder_states = self.generator.get_encoder()(
            input_ids=context.context_input_ids, attention_mask=context.context_attention_mask, return_dict=True
        ).last_hidden_state
        if output_provenance:
            kwargs["return_dict_in_generate"] = True
        config = generation_config if generation_config is not None else self.generation_config
        if "max_length" not in kwargs and "max_new_tokens" not in kwargs and config.max_new_tokens is None:
            # As the original: `max_length` counts the decoder start token. Left to GenerationMixin, an
            # unset max_length would become "20 new tokens", one more than the original generated.
            kwargs["max_length"] = compat.generation_setting(config, "max_length")
        static_cache = generation_utils.static_cache_for_contexts(
            self.config.generator, config, kwargs, context.context_input_ids.shape[1]
        )
        if static_cache is not None:
            kwargs[compat.CACHE_KWARG] = static_cache
            kwargs["cache_implementation"] = None  # the cache is given
        result = super().generate(
            generation_config=generation_config,
            logits_processor=logits_processor,
            stopping_criteria=stopping_criteria,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
            # grouped per question: see the module docstring
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states.view(batch_size, n_docs, *encoder_states.shape[1:])),
            context_attention_mask=context.context_attention_mask.view(batch_size, n_docs, -1),
            doc_scores=context.doc_scores,
            **kwargs,
        )
        if not output_provenance:
            return result
        repeats = result.sequences.shape[0] // batch_size
        return generation_utils.provenance(
            self.retriever,
            sequences=result.sequences,
            doc_ids=context.doc_ids,
            doc_scores=context.doc_scores,
            repeats=repeats,
            sequences_scores=getattr(result, "sequences_scores", None),
            scores=getattr(result, "scores", None),
        )

    # === GenerationMixin hooks ===
    def prepare_inputs_for_generation(
        self,
        decoder_input_ids: Tensor,
        past_key_values: Optional[Any] = None,
        encoder_outputs: Optional[Any] = None,
        context_attention_mask: Optional[Tensor] = None,
        doc_scores: Optional[Tensor] = None,
        use_cache: Optional[bool] = None,
        next_sequence_length: Optional[int] = None,
        cache: Optional[Any] = None,
        **kwargs,
    ) -> dict:
        """One step: `(B*beams, N, L, H)` states flattened to the `B*beams*N` generator rows.

        The cache arrives as `past_key_values` (transformers 4) or `cache` (transformers 5); only the
        tokens the cache has not seen yet are fed to the decoder.
        """
        cache = past_key_values if past_key_values is not None else cache
        if next_sequence_length is not None:
            decoder_input_ids = decoder_input_ids[:, -next_sequence_length:]
        elif cache is not None and cache.get_seq_length() > 0:
            decoder_input_ids = decoder_input_ids[:, cache.get_seq_length() :]
        states = encoder_outputs.last_hidden_state
        return {
            "encoder_outputs": BaseModelOutput(last_hidden_state=states.reshape(-1, *states.shape[2:])),
            "context_attention_mask": context_attention_mask.reshape(-1, context_attention_mask.shape[-1]),
            "doc_scores": doc_scores,
            "decoder_input_ids": decoder_input_ids,
            "past_key_values": cache,
            "use_cache": use_cache,
            "do_marginalize": True,
        }

    def _update_model_kwargs_for_generation(self, outputs: Any, model_kwargs: dict, *args, **kwargs) -> dict:
        """GenerationMixin's update, plus the cache under the name this transformers' `generate` reads
        (our outputs call it `past_key_values`, as the original's did)."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        cache = outputs.get("past_key_values")
        if cache is not None:
            model_kwargs[compat.CACHE_KWARG] = cache
        return model_kwargs

    def _reorder_cache(self, past_key_values: Any, beam_idx: Tensor) -> Any:
        """Beam search picked rows `beam_idx` of the `B*beams` (question, beam) rows: move each row's
        `N` passage rows of the decoder cache along with it.

        Only the self-attention cache moves: the cross-attention cache depends on the question and
        passage alone, which a beam never changes, so reordering it would only copy equal tensors.
        """
        cache = past_key_values.self_attention_cache if isinstance(past_key_values, EncoderDecoderCache) else past_key_values
        if not isinstance(cache, Cache):
            raise TypeError(f"RAG-Token beam search needs a transformers Cache, got {type(past_key_values).__name__}")
        layer = next((layer for layer in cache.layers if getattr(layer, "keys", None) is not None), None)
        if layer is None:  # nothing cached yet
            return past_key_values
        n_docs = layer.keys.shape[0] // beam_idx.shape[0]
        rows = (beam_idx[:, None] * n_docs + torch.arange(n_docs, device=beam_idx.device)).reshape(-1)
        cache.reorder_cache(rows)
        return past_key_values

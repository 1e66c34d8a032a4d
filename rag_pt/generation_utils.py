"""Tensor helpers shared by the two `generate` methods: contexts, deduplication, rescoring, provenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, EncoderDecoderCache, StaticCache
from transformers.generation.configuration_utils import ALL_STATIC_CACHE_IMPLEMENTATIONS
from transformers.modeling_outputs import BaseModelOutput

from rag_core import RetrievAugGenerateOutput, compat
from rag_core.arguments import check_context_inputs, resolve_n_docs

from . import losses, retrieval_bridge
from .rag_model import generator_prefix

# Upper bound on the logits one rescoring chunk materialises (floats): 2**25 is 128 MiB in float32.
RESCORE_CHUNK_LOGITS = 2**25


@dataclass
class Context:
    """The contexts a batch is generated from: `(B*N, L)` ids and mask, `(B, N)` scores and ids."""

    context_input_ids: Tensor
    context_attention_mask: Tensor
    doc_scores: Tensor
    doc_ids: Optional[Tensor] = None


def prepare_context(
    rag: Any,
    input_ids: Optional[Tensor],
    attention_mask: Optional[Tensor],
    context_input_ids: Optional[Tensor],
    context_attention_mask: Optional[Tensor],
    doc_scores: Optional[Tensor],
    n_docs: Optional[int],
) -> Context:
    """Retrieve for `input_ids` (when no context is given), or check the given context."""
    n_docs_explicit = n_docs is not None
    n_docs = resolve_n_docs(n_docs, rag.config.n_docs)
    if context_input_ids is None:
        question_vectors = rag.encode_question(input_ids, attention_mask)
        retrieved = retrieval_bridge.retrieve(
            rag.retriever, input_ids, question_vectors, prefix=generator_prefix(rag.generator), n_docs=n_docs
        )
        return Context(
            context_input_ids=retrieved.context_input_ids,
            context_attention_mask=retrieved.context_attention_mask,
            doc_scores=retrieval_bridge.score_documents(question_vectors, retrieved.doc_embeds, retrieved.doc_ids),
            doc_ids=retrieved.doc_ids,
        )
    check_context_inputs(
        n_docs=n_docs,
        context_input_ids_shape=tuple(context_input_ids.shape),
        context_attention_mask_shape=tuple(context_attention_mask.shape) if context_attention_mask is not None else None,
        doc_scores_shape=tuple(doc_scores.shape) if doc_scores is not None else None,
        batch_size=input_ids.shape[0] if input_ids is not None else None,
        n_docs_explicit=n_docs_explicit,
    )
    if context_attention_mask is None:
        context_attention_mask = context_input_ids.ne(rag.config.generator.pad_token_id).long()
    return Context(context_input_ids, context_attention_mask, doc_scores)


def same_sequences(candidates: Tensor) -> Tensor:
    """`same[b, i, j]`: candidates i and j of question b are the same token ids, `(B, C, C)`."""
    return (candidates[:, :, None, :] == candidates[:, None, :, :]).all(-1)


def first_occurrences(same: Tensor) -> Tensor:
    """`(B, C)`: True for the first occurrence of each distinct candidate (deduplication by token ids)."""
    earlier = torch.ones(same.shape[1:], dtype=torch.bool, device=same.device).tril(diagonal=-1)
    return ~(same & earlier).any(-1)


def beam_logprob_sums(sequences_scores: Tensor, sequences: Tensor, generation_config: Any, kwargs: dict) -> Tensor:
    """Undo beam search's length normalisation: `score * generated_length ** length_penalty`."""
    length_penalty = compat.generation_setting(generation_config, "length_penalty", kwargs)
    eos = compat.generation_setting(generation_config, "eos_token_id", kwargs)
    pad = compat.generation_setting(generation_config, "pad_token_id", kwargs)
    generated = sequences[:, 1:]  # after the decoder start token
    eos_ids = torch.as_tensor([eos] if isinstance(eos, int) else list(eos or []), device=sequences.device)
    is_eos = torch.isin(generated, eos_ids)
    lengths = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, generated.ne(pad).sum(1))
    return sequences_scores * lengths.to(sequences_scores.dtype) ** length_penalty


def score_candidates(
    generator: Any,
    encoder_states: Tensor,
    context_attention_mask: Tensor,
    question: Tensor,
    labels: Tensor,
    target: Tensor,
    n_docs: int,
    with_smooth: bool,
) -> tuple[Tensor, Optional[Tensor]]:
    """Per-position log-probabilities of K candidates under every passage of their question.

    `encoder_states`: `(B*N, L, H)` generator-encoder states of the contexts; `question`: `(K,)`
    the question of each candidate; `labels` / `target`: `(K, S)` decoder inputs / targets.
    Returns `(K, N, S)` target log-probs (and their sums over the vocabulary), computed in chunks
    so the logits never exceed `RESCORE_CHUNK_LOGITS` floats.
    """
    num, length = labels.shape
    vocab_size = generator.config.vocab_size
    per_candidate = max(1, n_docs * length * vocab_size)
    chunk = max(1, RESCORE_CHUNK_LOGITS // per_candidate)
    offsets = torch.arange(n_docs, device=question.device)
    token_parts, smooth_parts = [], []
    for start in range(0, num, chunk):
        rows = slice(start, start + chunk)
        context_rows = (question[rows, None] * n_docs + offsets).reshape(-1)
        logits = generator(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states[context_rows]),
            attention_mask=context_attention_mask[context_rows],
            decoder_input_ids=labels[rows].repeat_interleave(n_docs, dim=0),
            use_cache=False,
            return_dict=True,
        ).logits
        token_lp, smooth_lp = losses.sequence_token_logprobs(
            logits, target[rows].repeat_interleave(n_docs, dim=0), with_smooth
        )
        token_parts.append(token_lp.view(-1, n_docs, length))
        if smooth_lp is not None:
            smooth_parts.append(smooth_lp.view(-1, n_docs, length))
    return torch.cat(token_parts), (torch.cat(smooth_parts) if with_smooth else None)


def provenance(
    retriever: Any,
    *,
    sequences: Tensor,
    doc_ids: Optional[Tensor],
    doc_scores: Tensor,
    repeats: int,
    sequences_scores: Optional[Tensor] = None,
    scores: Any = None,
) -> RetrievAugGenerateOutput:
    """Per output row: the passages (ids, titles, scores) of the question it answers."""
    doc_ids = doc_ids.repeat_interleave(repeats, dim=0) if doc_ids is not None else None
    return RetrievAugGenerateOutput(
        sequences=sequences,
        doc_ids=doc_ids,
        doc_scores=doc_scores.repeat_interleave(repeats, dim=0),
        doc_titles=retrieval_bridge.passage_titles(retriever, doc_ids),
        sequences_scores=sequences_scores,
        scores=scores,
    )


class SelfAttentionReorderCache(EncoderDecoderCache):
    """A decoder cache whose beam reordering leaves the cross-attention part alone.

    Beam search only ever moves a beam to another beam of the same input row, and all beams of a
    row attend to the same encoder states: their cross-attention keys/values are equal, so copying
    them at every step (what `EncoderDecoderCache.reorder_cache` does) changes nothing but costs a
    `(rows, heads, L, d)` copy per layer per step.
    """

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def new_beam_cache() -> SelfAttentionReorderCache:
    return SelfAttentionReorderCache(DynamicCache(), DynamicCache())


def static_cache_for_contexts(
    generator_config: Any, generation_config: Any, kwargs: dict, context_length: int
) -> Optional[EncoderDecoderCache]:
    """A static decoder cache for RAG-Token's `generate` when one is asked for (and none is given), else None.

    GenerationMixin sizes the cross-attention part of a static cache from `encoder_outputs[0].shape[1]`,
    which for the `(B, N, L, H)` states RAG-Token hands it is N, not the context length L. This builds
    the cache with the right sizes instead (self-attention: the new tokens; cross-attention: L); the
    caller passes it as the cache and drops `cache_implementation`. The batch size is taken from the
    first update, so beams and passages need no special care.
    """
    implementation = kwargs.get("cache_implementation", getattr(generation_config, "cache_implementation", None))
    given = kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None
    if implementation not in ALL_STATIC_CACHE_IMPLEMENTATIONS or given:
        return None
    if kwargs.get("max_new_tokens") is not None:
        new_tokens = kwargs["max_new_tokens"]
    elif kwargs.get("max_length") is not None:
        new_tokens = kwargs["max_length"] - 1  # after the decoder start token
    else:
        new_tokens = getattr(generation_config, "max_new_tokens", None)
        if new_tokens is None:
            new_tokens = compat.generation_setting(generation_config, "max_length") - 1
    offloading = "offloaded" in implementation
    return EncoderDecoderCache(
        StaticCache(config=generator_config, max_cache_len=max(1, new_tokens), offloading=offloading),
        StaticCache(config=generator_config, max_cache_len=context_length, offloading=offloading),
    )

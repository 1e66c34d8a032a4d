"""Tensor helpers shared by the two `generate` methods: contexts, candidate scoring, provenance, caches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, EncoderDecoderCache, StaticCache
from transformers.generation.configuration_utils import ALL_STATIC_CACHE_IMPLEMENTATIONS
from transformers.modeling_outputs import BaseModelOutput

from rag_core import RetrievAugGenerateOutput, compat
from rag_core.arguments import check_context_inputs, resolve_n_docs
from rag_core.generation import RescorePlan, rescore_chunk_candidates

from . import losses, retrieval_bridge
from .rag_model import generator_prefix

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


def to_numpy(tensor: Tensor) -> np.ndarray:
    """Where `generate` crosses into numpy for the candidate bookkeeping of `rag_core.generation`."""
    return tensor.detach().float().cpu().numpy() if tensor.is_floating_point() else tensor.detach().cpu().numpy()


def score_candidates(
    model: Any,
    encoder_states: Tensor,
    context_attention_mask: Tensor,
    plan: RescorePlan,
    with_smooth: bool,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Per-position log-probabilities of the plan's K candidates under their P generator rows each.

    `model`: the RAG head (its generator scores); `encoder_states`: `(B*N, L, H)` generator-encoder
    states of the contexts (the decoding's own). Returns `(K, P, S)` target log-probs (and, with
    `with_smooth`, their sums over the vocabulary) as numpy, computed in chunks of candidates so the
    logits never exceed `rag_core.generation.RESCORE_CHUNK_BYTES`.
    """
    generator = model.generator
    device = encoder_states.device
    rows = torch.as_tensor(plan.rows, device=device)
    labels = torch.as_tensor(plan.labels, device=device)
    target = torch.as_tensor(plan.target, device=device)
    num, per = rows.shape
    length = labels.shape[1]
    itemsize = torch.finfo(encoder_states.dtype).bits // 8
    chunk = rescore_chunk_candidates(per, length, generator.config.vocab_size, itemsize=itemsize)
    token_parts, smooth_parts = [], []
    for start in range(0, num, chunk):
        part = slice(start, start + chunk)
        context_rows = rows[part].reshape(-1)
        logits = generator(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states[context_rows]),
            attention_mask=context_attention_mask[context_rows],
            decoder_input_ids=labels[part].repeat_interleave(per, dim=0),
            use_cache=False,
            return_dict=True,
        ).logits
        token_lp, smooth_lp = losses.sequence_token_logprobs(
            logits, target[part].repeat_interleave(per, dim=0), with_smooth
        )
        token_parts.append(to_numpy(token_lp).reshape(-1, per, length))
        if smooth_lp is not None:
            smooth_parts.append(to_numpy(smooth_lp).reshape(-1, per, length))
    return np.concatenate(token_parts), (np.concatenate(smooth_parts) if with_smooth else None)


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

"""Helpers both TF `generate` methods use (the twin of `rag_pt/generation_utils.py`): retrieval or
checks of the given context, the cached compiled encoder + decoding-loop function, candidate scoring
for RAG-Sequence, and provenance.
The decoding loop itself is `decoding.py` (TF only)."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from rag_core.arguments import check_context_inputs, check_generate_inputs
from rag_core.arguments import doc_titles as _doc_titles
from rag_core.generation import RescorePlan, rescore_chunk_candidates
from rag_core.outputs import RagOutput

from . import decoding, losses, retrieval_bridge
from .models.outputs import EncoderOutput


def resolve_generation_config(model, generation_config, kwargs: dict):
    """A private copy of the generation config updated with `kwargs`; unknown keys are an error."""
    generation_config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    unused = generation_config.update(**kwargs)
    if unused:
        raise TypeError(f"generate() got unexpected keyword arguments: {sorted(unused)}")
    return generation_config


def context_for_generate(rag, input_ids, attention_mask, context_input_ids, context_attention_mask, doc_scores,
                         n_docs: int, n_docs_explicit: bool):
    """Retrieve (when needed) and check the context. Returns (ctx ids, ctx mask, doc scores, doc ids, n_docs)."""
    doc_ids = None
    check_generate_inputs(has_input_ids=input_ids is not None, has_context=context_input_ids is not None,
                          has_retriever=rag.retriever is not None)
    if context_input_ids is None:
        input_ids = tf.convert_to_tensor(input_ids)
        vectors = rag.encode_question(input_ids, attention_mask)
        retrieved = retrieval_bridge.retrieve(rag.retriever, input_ids, vectors,
                                              prefix=getattr(rag.generator.config, "prefix", None),
                                              n_docs=n_docs)
        context_input_ids = retrieved["context_input_ids"]
        context_attention_mask = retrieved["context_attention_mask"]
        doc_ids = retrieved["doc_ids"]
        doc_scores = retrieval_bridge.score_documents(vectors, retrieved["retrieved_doc_embeds"], doc_ids)
    else:
        context_input_ids = tf.convert_to_tensor(context_input_ids)
        if context_attention_mask is None:
            context_attention_mask = tf.cast(
                tf.not_equal(context_input_ids, tf.cast(rag.config.generator.pad_token_id, context_input_ids.dtype)),
                tf.int32)
        context_attention_mask = tf.convert_to_tensor(context_attention_mask)
        if doc_scores is not None:
            doc_scores = tf.convert_to_tensor(doc_scores)
        n_docs = check_context_inputs(
            n_docs=n_docs,
            context_input_ids_shape=tuple(context_input_ids.shape),
            context_attention_mask_shape=tuple(context_attention_mask.shape),
            doc_scores_shape=None if doc_scores is None else tuple(doc_scores.shape),
            batch_size=None if input_ids is None else int(input_ids.shape[0]),
            n_docs_explicit=n_docs_explicit,
        )
    return (tf.cast(context_input_ids, tf.int32), tf.cast(context_attention_mask, tf.int32),
            None if doc_scores is None else tf.cast(doc_scores, tf.float32), doc_ids, n_docs)


def make_decode_function(generator, options: decoding.DecodingOptions, rows_per_hypothesis: int, marginalize: bool,
                         jit_compile: bool, prefix_allowed_tokens_fn=None, logits_processor=()):
    """`fn(context_input_ids, context_attention_mask, doc_scores) -> dict of fixed-shape buffers`:
    the generator's encoder once per context, then the decoding loop, in one `tf.function`."""
    vocab_size = generator.config.vocab_size

    def decode(context_input_ids, context_attention_mask, doc_scores, seed=None):
        encoder = generator.get_encoder()
        hidden = encoder(input_ids=context_input_ids, attention_mask=context_attention_mask,
                         training=False).last_hidden_state
        batch_size = tf.shape(context_input_ids)[0] // rows_per_hypothesis
        result = decoding.run(
            generator, hidden, context_attention_mask, options, batch_size, vocab_size,
            rows_per_hypothesis=rows_per_hypothesis, doc_scores=doc_scores if marginalize else None,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, logits_processor=logits_processor, seed=seed,
        )
        result["encoder_hidden"] = hidden  # RAG-Sequence rescoring reuses it instead of encoding again
        return result

    if prefix_allowed_tokens_fn is not None and jit_compile:
        raise ValueError("prefix_allowed_tokens_fn calls Python at every step and cannot run with jit_compile=True")
    return tf.function(decode, jit_compile=jit_compile, reduce_retracing=True)


def sampling_seed(options: decoding.DecodingOptions, seed) -> Optional[tf.Tensor]:
    """The `(2,)` seed tensor of a sampling call (a fresh random one unless `seed` is given); None
    when not sampling. A tensor, so a new seed does not retrace the compiled loop."""
    if not options.do_sample:
        if seed is not None:
            raise ValueError("`seed` only applies with do_sample=True")
        return None
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    return tf.constant([int(seed), 0], tf.int32)


def cached_decode_function(model, key: tuple, factory):
    cache = model.__dict__.setdefault("_rag_decode_functions", {})
    if key not in cache:
        cache[key] = factory()
    return cache[key]


def to_numpy(tensor) -> np.ndarray:
    """Where `generate` crosses into numpy for the candidate bookkeeping of `rag_core.generation`."""
    return tensor.numpy() if hasattr(tensor, "numpy") else np.asarray(tensor)


def score_candidates(model, encoder_states, context_attention_mask, plan: RescorePlan, with_smooth: bool):
    """Per-position log-probabilities of the plan's K candidates under their P generator rows each.

    `encoder_states`: `(B*N, L, H)` generator-encoder states of the contexts (the decoding's own).
    Returns `(K, P, S)` target log-probs (and, with `with_smooth`, their sums over the vocabulary)
    as numpy. The candidates go through one cached `tf.function` (per `with_smooth`) in chunks, so
    the float32 logits of a call never exceed `rag_core.generation.RESCORE_CHUNK_BYTES`.
    """
    generator = model.generator
    score = cached_decode_function(model, ("sequence-rescore", bool(with_smooth)),
                                   lambda: tf.function(functools.partial(_score_rows, generator, with_smooth),
                                                       reduce_retracing=True))
    num, per = plan.rows.shape
    length = plan.labels.shape[1]
    chunk = rescore_chunk_candidates(per, length, generator.config.vocab_size, itemsize=4)
    token_parts, smooth_parts = [], []
    for start in range(0, num, chunk):
        part = slice(start, start + chunk)
        token_lp, smooth_lp = score(
            encoder_states, context_attention_mask,
            tf.constant(plan.rows[part].reshape(-1), tf.int32),
            tf.constant(np.repeat(plan.labels[part], per, axis=0), tf.int32),
            tf.constant(np.repeat(plan.target[part], per, axis=0), tf.int32),
        )
        token_parts.append(to_numpy(token_lp).reshape(-1, per, length))
        if with_smooth:
            smooth_parts.append(to_numpy(smooth_lp).reshape(-1, per, length))
    return np.concatenate(token_parts), (np.concatenate(smooth_parts) if with_smooth else None)


def _score_rows(generator, with_smooth: bool, encoder_states, context_attention_mask, rows, labels, target):
    """`(R, S)` target log-probs (and vocabulary sums) of `labels` under the generator rows `rows`."""
    logits = generator(input_ids=None, attention_mask=tf.gather(context_attention_mask, rows),
                       encoder_outputs=encoder_output(tf.gather(encoder_states, rows)), decoder_input_ids=labels,
                       use_cache=False, training=False).logits
    token_lp, smooth_lp = losses.sequence_token_logprobs(logits, target, with_smooth)
    return token_lp, (token_lp if smooth_lp is None else smooth_lp)  # a fixed output structure


def doc_titles(retriever, doc_ids) -> Optional[list]:
    """Per row of `doc_ids (rows, N)`: the N passage titles (None for an empty slot), via the index."""
    return _doc_titles(retriever, None if doc_ids is None else np.asarray(doc_ids))


def encoder_output(hidden) -> EncoderOutput:
    return EncoderOutput(last_hidden_state=hidden)


@dataclass
class GenerateOutput(RagOutput):
    """`generate(..., return_dict_in_generate=True)` of `TFRagTokenForGeneration`.

    sequences: `(B*R, S)` ids. scores: with `output_scores`, a tuple of `(B*R, V)` (greedy) or
    `(B*K, V)` (beam) processed scores per step. sequences_scores: `(B*R,)` length-normalised beam
    scores (beam search). beam_indices: `(B*R, S-1)` (beam search).
    """

    sequences: Any = None
    sequences_scores: Optional[Any] = None
    scores: Optional[tuple] = None
    beam_indices: Optional[Any] = None

"""Greedy, sampling and beam-search decoding for TF RAG: fixed-shape `tf.while_loop`s that compile with XLA.

Why this file has no `rag_pt` twin: it is framework-specific on purpose. PyTorch decodes with
transformers' `GenerationMixin`, which `rag_pt.RagTokenForGeneration.generate` calls; transformers 5
has no TensorFlow decoding, and transformers 4's returned other RAG-Token beam-search ids than its
PyTorch one. The loops below follow transformers' PyTorch `_sample` (greedy) and `_beam_search`
step for step (same candidate count, same finished-beam bookkeeping, same early-stopping heuristic,
same processor order), which is what makes our TF and PyTorch ids identical.

Shapes are fixed for the whole loop: sequences live in a `(hypotheses, max_length)` buffer and the
generator's static cache holds `max_length - 1` self-attention slots, written in place one per step
(slots not yet written are masked out). The first step runs before the loop because it creates the
cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

NEG_INF = float("-inf")

# Generation options these loops implement; any other option set to a non-default value is refused
# with a clear error rather than silently ignored.
_UNSUPPORTED = {
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "constraints": None,
    "force_words_ids": None,
    "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "sequence_bias": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    "penalty_alpha": None,
    "max_time": None,
    "stop_strings": None,
    "min_new_tokens": None,
}


def _as_tuple(ids) -> tuple:
    if ids is None:
        return ()
    return tuple(int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]))


@dataclass(frozen=True)
class DecodingOptions:
    """The resolved, hashable decoding settings (one compiled loop per distinct value)."""

    max_length: int
    min_length: int
    num_beams: int
    num_return_sequences: int
    decoder_start_token_id: int
    pad_token_id: int
    eos_token_ids: tuple
    forced_bos_token_id: Optional[int]
    forced_eos_token_ids: tuple
    no_repeat_ngram_size: int
    repetition_penalty: float
    suppress_tokens: tuple
    length_penalty: float
    early_stopping: Union[bool, str]
    output_scores: bool
    return_dict_in_generate: bool
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    bad_words_ids: tuple = ()

    @classmethod
    def from_generation_config(cls, generation_config, fallback_config=None,
                               default_max_length: int = 20) -> "DecodingOptions":
        """Read a `GenerationConfig` (already updated with the call's kwargs); refuse what we cannot do.
        `default_max_length` applies when the config leaves `max_length` unset (transformers 5)."""
        gc = generation_config
        for name, default in _UNSUPPORTED.items():
            value = getattr(gc, name, default)
            if value not in (default, None) and not (name == "num_beam_groups" and value == 1):
                raise NotImplementedError(
                    f"generate({name}={value!r}) is not supported by the TF RAG decoder; supported: greedy, "
                    "sampling (temperature, top_k, top_p, seed) and beam search with min/max length, "
                    "no_repeat_ngram_size, repetition_penalty, forced BOS/EOS, suppress_tokens, bad_words_ids, "
                    "prefix_allowed_tokens_fn, num_return_sequences"
                )
        fallback = fallback_config
        eos = _as_tuple(gc.eos_token_id if gc.eos_token_id is not None else getattr(fallback, "eos_token_id", None))
        pad = gc.pad_token_id if gc.pad_token_id is not None else getattr(fallback, "pad_token_id", None)
        if pad is None and eos:
            pad = eos[0]  # what transformers' PyTorch generate does
        start = gc.decoder_start_token_id
        if start is None:
            start = getattr(fallback, "decoder_start_token_id", None)
        if start is None:
            start = gc.bos_token_id if gc.bos_token_id is not None else getattr(fallback, "bos_token_id", None)
        if start is None:
            raise ValueError("generate needs a decoder_start_token_id (or bos_token_id) in the config")
        num_beams = int(gc.num_beams or 1)
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        num_return = int(gc.num_return_sequences or 1)
        if num_beams == 1 and num_return > 1:
            raise ValueError(f"num_return_sequences has to be 1 with greedy decoding, got {num_return}")
        if gc.do_sample and num_beams > 1:
            raise NotImplementedError("beam sampling (do_sample=True with num_beams > 1) is not supported by the TF "
                                      "RAG decoder; sample with num_beams=1, or search with do_sample=False")
        if gc.do_sample and (gc.temperature is not None and not gc.temperature > 0):
            raise ValueError(f"temperature must be > 0 when sampling, got {gc.temperature}")
        if num_return > num_beams:
            raise ValueError(f"num_return_sequences ({num_return}) has to be <= num_beams ({num_beams})")
        # transformers 5 leaves unset generation options None (transformers 4 stored max_length=20)
        max_length = int(gc.max_length if gc.max_length is not None else default_max_length)
        if gc.max_new_tokens is not None:
            max_length = 1 + int(gc.max_new_tokens)
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (start token + one token), got {max_length}")
        return cls(
            max_length=max_length,
            min_length=int(gc.min_length or 0),
            num_beams=num_beams,
            num_return_sequences=num_return,
            decoder_start_token_id=int(start),
            pad_token_id=int(pad if pad is not None else 0),
            eos_token_ids=eos,
            forced_bos_token_id=gc.forced_bos_token_id,
            forced_eos_token_ids=_as_tuple(gc.forced_eos_token_id),
            no_repeat_ngram_size=int(gc.no_repeat_ngram_size or 0),
            repetition_penalty=float(gc.repetition_penalty if gc.repetition_penalty is not None else 1.0),
            suppress_tokens=_as_tuple(gc.suppress_tokens),
            length_penalty=float(gc.length_penalty if gc.length_penalty is not None else 1.0),
            early_stopping=gc.early_stopping if gc.early_stopping is not None else False,
            output_scores=bool(gc.output_scores),
            return_dict_in_generate=bool(gc.return_dict_in_generate),
            do_sample=bool(gc.do_sample),
            temperature=float(gc.temperature if gc.temperature is not None else 1.0),
            top_k=int(gc.top_k or 0),
            top_p=float(gc.top_p if gc.top_p is not None else 1.0),
            bad_words_ids=tuple(tuple(int(t) for t in word) for word in (gc.bad_words_ids or ())),
        )


# === Logits processors (transformers' PyTorch order and semantics, on fixed-shape buffers) ===
class LogitsProcessor:
    """Applies the configured processors to `scores (H, V)` given `sequences (H, M)` of which the
    first `cur_len` positions are filled. Extra processors (callables `(sequences, scores, cur_len)`
    like transformers' TF ones) run last, as transformers appends custom processors."""

    def __init__(self, options: DecodingOptions, vocab_size: int, prefix_allowed_tokens_fn=None, extra=()):
        self.options = options
        self.vocab_size = vocab_size
        self.prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self.extra = tuple(extra or ())

    def __call__(self, sequences, scores, cur_len):
        o = self.options
        if o.repetition_penalty != 1.0:
            scores = self._repetition_penalty(sequences, scores, cur_len)
        if o.no_repeat_ngram_size > 0:
            scores = self._no_repeat_ngram(sequences, scores, cur_len)
        if o.min_length > 0 and o.eos_token_ids:
            scores = tf.where(cur_len < o.min_length, self._ban(scores, o.eos_token_ids), scores)
        if self.prefix_allowed_tokens_fn is not None:
            scores = scores + self._prefix_mask(sequences, cur_len)
        if o.forced_bos_token_id is not None:
            scores = tf.where(cur_len == 1, self._force(scores, (o.forced_bos_token_id,)), scores)
        if o.forced_eos_token_ids:
            scores = tf.where(cur_len == o.max_length - 1, self._force(scores, o.forced_eos_token_ids), scores)
        if o.suppress_tokens:
            scores = self._ban(scores, o.suppress_tokens)
        if o.bad_words_ids:
            scores = self._bad_words(sequences, scores, cur_len)
        for processor in self.extra:
            scores = processor(sequences, scores, cur_len)
        return scores

    def _token_mask(self, token_ids) -> tf.Tensor:
        mask = np.zeros([self.vocab_size], dtype=bool)
        mask[[t for t in token_ids if 0 <= t < self.vocab_size]] = True
        return tf.constant(mask)[None, :]

    def _ban(self, scores, token_ids):
        return tf.where(self._token_mask(token_ids), tf.constant(NEG_INF, scores.dtype), scores)

    def _force(self, scores, token_ids):
        return tf.where(self._token_mask(token_ids), tf.zeros_like(scores), tf.fill(tf.shape(scores), NEG_INF))

    def _present_tokens(self, sequences, valid):
        """`(H, V)` bool: token v occurs at a position where `valid (H, M)` holds."""
        rows = tf.shape(sequences)[0]
        width = tf.shape(sequences)[1]
        row_ids = tf.tile(tf.range(rows)[:, None], [1, width])
        indices = tf.stack([tf.reshape(row_ids, [-1]), tf.reshape(sequences, [-1])], axis=1)
        counts = tf.scatter_nd(indices, tf.reshape(tf.cast(valid, tf.int32), [-1]), [rows, self.vocab_size])
        return counts > 0

    def _repetition_penalty(self, sequences, scores, cur_len):
        positions = tf.range(tf.shape(sequences)[1])[None, :]
        present = self._present_tokens(sequences, tf.broadcast_to(positions < cur_len, tf.shape(sequences)))
        penalty = self.options.repetition_penalty
        penalised = tf.where(scores < 0, scores * penalty, scores / penalty)
        return tf.where(present, penalised, scores)

    def _no_repeat_ngram(self, sequences, scores, cur_len):
        """Ban every token that would complete an n-gram already in the first `cur_len` tokens."""
        n = self.options.no_repeat_ngram_size
        width = sequences.shape[1]
        starts = width - n + 1  # candidate n-gram start positions i, the n-gram is i .. i+n-1
        if starts <= 0:
            return scores
        match = tf.range(starts)[None, :] <= cur_len - n  # the n-gram lies within the filled part
        for k in range(n - 1):  # its first n-1 tokens equal the last n-1 tokens
            last_k = tf.gather(sequences, tf.maximum(cur_len - n + 1 + k, 0), axis=1)
            match = match & tf.equal(sequences[:, k:k + starts], last_k[:, None])
        banned_tokens = sequences[:, n - 1:n - 1 + starts]
        banned = self._present_tokens(banned_tokens, match)
        banned = banned & (cur_len + 1 >= n)
        return tf.where(banned, tf.constant(NEG_INF, scores.dtype), scores)

    def _bad_words(self, sequences, scores, cur_len):
        """Ban the last token of each bad word whose other tokens are the last tokens generated."""
        banned = tf.zeros(tf.shape(scores), tf.bool)
        for word in self.options.bad_words_ids:
            if not word or not 0 <= word[-1] < self.vocab_size:
                continue
            match = tf.ones([tf.shape(sequences)[0]], tf.bool)
            for k, token in enumerate(word[:-1]):  # token k sits at position cur_len - (len - 1) + k
                position = cur_len - (len(word) - 1) + k
                at = tf.gather(sequences, tf.maximum(position, 0), axis=1)
                match = match & (position >= 0) & tf.equal(at, token)
            banned = banned | (match[:, None] & self._token_mask((word[-1],)))
        return tf.where(banned, tf.constant(NEG_INF, scores.dtype), scores)

    def warp(self, scores):
        """Sampling warpers in transformers' order: temperature, top-k, top-p (nucleus)."""
        o = self.options
        if o.temperature != 1.0:
            scores = scores / o.temperature
        if o.top_k > 0:
            k = min(o.top_k, self.vocab_size)
            kth = tf.math.top_k(scores, k=k).values[:, -1:]
            scores = tf.where(scores < kth, tf.constant(NEG_INF, scores.dtype), scores)
        if o.top_p < 1.0:
            ordered = tf.sort(scores, axis=-1, direction="DESCENDING")
            cumulative = tf.cumsum(tf.nn.softmax(ordered, axis=-1), axis=-1)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            keep = tf.concat([tf.ones_like(cumulative[:, :1], tf.bool), cumulative[:, :-1] < o.top_p], axis=-1)
            threshold = tf.reduce_min(tf.where(keep, ordered, tf.constant(np.inf, scores.dtype)), axis=-1,
                                      keepdims=True)
            scores = tf.where(scores < threshold, tf.constant(NEG_INF, scores.dtype), scores)
        return scores

    def _prefix_mask(self, sequences, cur_len):
        """0 for the tokens `prefix_allowed_tokens_fn(batch_id, sent)` allows, -inf elsewhere (Python)."""
        fn, num_beams, vocab = self.prefix_allowed_tokens_fn, self.options.num_beams, self.vocab_size

        def _mask(seqs, length):
            length = int(length)
            mask = np.full([seqs.shape[0], vocab], NEG_INF, dtype=np.float32)
            for row in range(seqs.shape[0]):
                allowed = fn(row // num_beams, tf.constant(seqs[row, :length].numpy()))
                if len(allowed) == 0:
                    raise ValueError(
                        f"prefix_allowed_tokens_fn returned an empty list for batch ID {row // num_beams}"
                    )
                mask[row, list(allowed)] = 0.0
            return mask

        mask = tf.py_function(_mask, [sequences, cur_len], tf.float32)
        mask.set_shape([sequences.shape[0], vocab])
        return mask


# === One decoder step over a preallocated cache ===
class GeneratorStep:
    """Runs the seq2seq generator one token at a time for `H` hypotheses over a static cache.

    Each hypothesis owns `rows_per_hypothesis` decoder rows (RAG-Token: one per passage, marginalised
    with `doc_scores`; a plain generator: one row, raw logits). The generator's cache
    (`init_cache` / `decode_step`) holds `max_length - 1` self-attention slots; slot `t` holds the
    keys and values of token `t` and is written in place, so every shape stays fixed. The rows of one
    hypothesis are adjacent, so reordering beams moves each beam's passage rows together.
    """

    def __init__(self, generator, encoder_hidden, encoder_mask, max_length: int, rows_per_hypothesis: int = 1,
                 doc_scores=None):
        self.generator = generator
        self.encoder_hidden = encoder_hidden
        self.encoder_mask = encoder_mask
        self.max_length = max_length
        self.rows = rows_per_hypothesis
        self.doc_logprobs = None if doc_scores is None else tf.nn.log_softmax(tf.cast(doc_scores, tf.float32), axis=1)

    def _run(self, tokens, cache, index):
        decoder_ids = tf.repeat(tokens, self.rows, axis=0) if self.rows > 1 else tokens
        shapes = {key: value.shape for key, value in cache.items()}
        logits, cache = self.generator.decode_step(decoder_ids, cache, index, self.encoder_mask)
        # static shapes in, static shapes out: the while_loop's state must keep its shape
        cache = {key: tf.ensure_shape(value, shapes[key]) for key, value in cache.items()}
        logits = tf.ensure_shape(tf.cast(logits, tf.float32), [decoder_ids.shape[0], None])
        if self.doc_logprobs is not None:  # RAG-Token marginal over the passages
            logprobs = tf.nn.log_softmax(logits, axis=-1)
            logprobs = tf.reshape(logprobs, [-1, self.rows, tf.shape(logits)[-1]])
            logits = tf.reduce_logsumexp(logprobs + self.doc_logprobs[:, :, None], axis=1)
        return logits, cache

    def first(self, tokens):
        """Step 1 (the start token, slot 0): scores `(H, V)` and the cache."""
        cache = dict(self.generator.init_cache(self.encoder_hidden, self.encoder_mask, self.max_length - 1))
        return self._run(tokens, cache, tf.constant(0, tf.int32))

    def next(self, tokens, cache, cur_len):
        """The step that feeds token `cur_len - 1` and writes its keys/values to slot `cur_len - 1`."""
        return self._run(tokens, cache, tf.cast(cur_len - 1, tf.int32))

    def reorder(self, cache, hypothesis_indices):
        """Keep the self-attention cache rows of the chosen hypotheses (beam search). The cross-attention
        cache is the same for every beam of one example, so it needs no reordering."""
        if self.rows > 1:
            row_indices = tf.reshape(hypothesis_indices[:, None] * self.rows + tf.range(self.rows)[None, :], [-1])
        else:
            row_indices = hypothesis_indices
        return dict(cache, self=tf.gather(cache["self"], row_indices, axis=2))


def _write_column(buffer, column, values):
    """`buffer[..., column] = values` on a fixed-shape buffer."""
    onehot = tf.one_hot(column, tf.shape(buffer)[-1], on_value=True, off_value=False, dtype=tf.bool)
    return tf.where(onehot, tf.expand_dims(values, -1), buffer)


def _isin(tokens, token_ids: Sequence[int]):
    if not token_ids:
        return tf.zeros_like(tokens, dtype=tf.bool)
    return tf.reduce_any(tf.equal(tokens[..., None], tf.constant(list(token_ids), tokens.dtype)), axis=-1)


# === Greedy (transformers' PyTorch `_sample` without sampling) ===
def greedy_search(step: GeneratorStep, options: DecodingOptions, batch_size, processor: LogitsProcessor,
                  seed=None) -> dict:
    """Returns `sequences (B, M)` (pad-filled past `length`), `length ()` and `scores (M-1, B, V)`.
    With `options.do_sample`, draws each token from the warped distribution with a stateless
    generator seeded by `seed` (`(2,)` int32) and the step, so a seed reproduces its samples."""
    M = options.max_length
    eos = options.eos_token_ids
    vocab = processor.vocab_size
    sequences = tf.fill([batch_size, M], tf.constant(options.pad_token_id, tf.int32))
    sequences = _write_column(sequences, 0, tf.fill([batch_size], tf.constant(options.decoder_start_token_id, tf.int32)))
    scores_acc = tf.zeros([M - 1, batch_size, vocab] if options.output_scores else [0], tf.float32)

    def advance(raw_scores, sequences, unfinished, cur_len, scores_acc):
        scores = processor(sequences, raw_scores, cur_len)
        if options.output_scores:
            scores_acc = tf.tensor_scatter_nd_update(scores_acc, [[cur_len - 1]], scores[None])
        if options.do_sample:
            step_seed = tf.stack([seed[0], seed[1] + cur_len])
            next_tokens = tf.cast(tf.random.stateless_categorical(processor.warp(scores), 1, step_seed)[:, 0], tf.int32)
        else:
            next_tokens = tf.argmax(scores, axis=-1, output_type=tf.int32)
        if eos:
            next_tokens = tf.where(unfinished, next_tokens, options.pad_token_id)
            unfinished = unfinished & ~_isin(next_tokens, eos)
        sequences = _write_column(sequences, cur_len, next_tokens)
        return sequences, unfinished, cur_len + 1, scores_acc

    unfinished = tf.ones([batch_size], tf.bool)
    raw, state = step.first(sequences[:, :1])
    sequences, unfinished, cur_len, scores_acc = advance(raw, sequences, unfinished, tf.constant(1), scores_acc)

    def cond(sequences, unfinished, cur_len, state, scores_acc):
        return (cur_len < M) & tf.reduce_any(unfinished)

    def body(sequences, unfinished, cur_len, state, scores_acc):
        tokens = tf.gather(sequences, cur_len - 1, axis=1)[:, None]
        raw, state = step.next(tokens, state, cur_len)
        sequences, unfinished, cur_len, scores_acc = advance(raw, sequences, unfinished, cur_len, scores_acc)
        return sequences, unfinished, cur_len, state, scores_acc

    sequences, unfinished, cur_len, state, scores_acc = tf.while_loop(
        cond, body, (sequences, unfinished, cur_len, state, scores_acc), maximum_iterations=M - 2
    )
    return {"sequences": sequences, "length": cur_len, "scores": scores_acc}


# === Beam search (transformers' PyTorch `_beam_search`, vectorised the same way) ===
def beam_search(step: GeneratorStep, options: DecodingOptions, batch_size, processor: LogitsProcessor) -> dict:
    """Returns `sequences (B*R, M)`, `length ()`, `sequences_scores (B*R,)`, `beam_indices (B*R, M-1)`
    and `scores (M-1, B*K, V)`."""
    K, M, vocab = options.num_beams, options.max_length, processor.vocab_size
    B = batch_size
    G = M - 1  # generated positions (the prompt is the start token)
    eos = options.eos_token_ids
    beams_to_keep = max(2, 1 + len(eos)) * K
    top_num_beam_mask = tf.constant([True] * K + [False] * (beams_to_keep - K))
    length_penalty, early_stopping = options.length_penalty, options.early_stopping
    fill = options.pad_token_id if options.pad_token_id is not None else (eos[0] if eos else -1)

    running_sequences = tf.fill([B, K, M], tf.constant(fill, tf.int32))
    running_sequences = _write_column(running_sequences, 0, tf.fill([B, K], options.decoder_start_token_id))
    state0 = {
        "running_sequences": running_sequences,
        "running_beam_scores": tf.tile(tf.constant([[0.0] + [-1e9] * (K - 1)], tf.float32), [B, 1]),
        "running_beam_indices": tf.fill([B, K, G], -1),
        "sequences": running_sequences,
        "beam_scores": tf.fill([B, K], tf.constant(-1e9, tf.float32)),
        "beam_indices": tf.fill([B, K, G], -1),
        "is_sent_finished": tf.zeros([B, K], tf.bool),
        "heuristic_unsatisfied": tf.ones([B, 1], tf.bool),
        "finished": tf.constant(False),
        "scores": tf.zeros([G, B * K, vocab] if options.output_scores else [0], tf.float32),
    }

    def gather_beams(tensor, indices):
        return tf.gather(tensor, indices, batch_dims=1)

    def advance(s, raw, cur_len):
        flat_running = tf.reshape(s["running_sequences"], [B * K, M])
        log_probs = tf.nn.log_softmax(raw, axis=-1)
        log_probs = processor(flat_running, log_probs, cur_len)
        scores_acc = s["scores"]
        if options.output_scores:
            scores_acc = tf.tensor_scatter_nd_update(scores_acc, [[cur_len - 1]], log_probs[None])
        log_probs = tf.reshape(log_probs, [B, K, vocab]) + s["running_beam_scores"][:, :, None]
        log_probs = tf.reshape(log_probs, [B, K * vocab])

        # top-k continuations
        topk_log_probs, topk_indices = tf.math.top_k(log_probs, k=beams_to_keep)
        topk_current_beam = topk_indices // vocab
        topk_ids = topk_indices % vocab
        topk_running_beam_indices = gather_beams(s["running_beam_indices"], topk_current_beam)
        topk_running_sequences = gather_beams(s["running_sequences"], topk_current_beam)
        topk_running_sequences = _write_column(topk_running_sequences, cur_len, topk_ids)
        batch_modified = topk_current_beam + tf.range(B)[:, None] * K
        # (B is a tensor captured by the loop: keep the static shape the buffer had)
        topk_running_beam_indices = tf.ensure_shape(
            _write_column(topk_running_beam_indices, cur_len - 1, batch_modified), topk_running_beam_indices.shape)

        hits = (cur_len + 1 >= M) | _isin(topk_ids, eos)  # (B, beams_to_keep)

        # running beams for the next iteration
        topk_running_log_probs = topk_log_probs + tf.cast(hits, tf.float32) * -1.0e9
        next_topk = tf.math.top_k(topk_running_log_probs, k=K).indices
        running_sequences = gather_beams(topk_running_sequences, next_topk)
        running_beam_scores = gather_beams(topk_running_log_probs, next_topk)
        running_beam_indices = gather_beams(topk_running_beam_indices, next_topk)

        # finished beams
        just_finished = hits & top_num_beam_mask[None, :]
        denominator = tf.cast(cur_len, tf.float32) ** length_penalty  # (cur_len + 1 - prompt length 1)
        finished_scores = topk_log_probs / denominator
        full = tf.reduce_all(s["is_sent_finished"], axis=-1, keepdims=True) & (early_stopping is True)
        finished_scores += tf.cast(full, tf.float32) * -1.0e9
        finished_scores += tf.cast(~s["heuristic_unsatisfied"], tf.float32) * -1.0e9
        finished_scores += tf.cast(~just_finished, tf.float32) * -1.0e9
        merged_scores = tf.concat([s["beam_scores"], finished_scores], axis=1)
        top_merged = tf.math.top_k(merged_scores, k=K).indices
        sequences = gather_beams(tf.concat([s["sequences"], topk_running_sequences], axis=1), top_merged)
        beam_scores = gather_beams(merged_scores, top_merged)
        beam_indices = gather_beams(tf.concat([s["beam_indices"], topk_running_beam_indices], axis=1), top_merged)
        is_sent_finished = gather_beams(tf.concat([s["is_sent_finished"], just_finished], axis=1), top_merged)

        next_len = cur_len + 1
        # early-stopping heuristic, evaluated at the new length
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = tf.cast(M - 1, tf.float32)
        else:
            best_length = tf.cast(next_len - 1, tf.float32)
        best_running = running_beam_scores[:, :1] / best_length ** length_penalty
        worst_finished = tf.where(
            is_sent_finished, tf.reduce_min(beam_scores, axis=1, keepdims=True), tf.constant(-1.0e9)
        )
        heuristic_unsatisfied = s["heuristic_unsatisfied"] & tf.reduce_any(
            best_running > worst_finished, axis=-1, keepdims=True
        )
        improvement_possible = tf.reduce_any(heuristic_unsatisfied)
        exists_open_beam = ~(tf.reduce_all(is_sent_finished) & (early_stopping is True))
        valid_continuations = ~tf.reduce_all(hits)
        new_state = {
            "running_sequences": running_sequences,
            "running_beam_scores": running_beam_scores,
            "running_beam_indices": running_beam_indices,
            "sequences": sequences,
            "beam_scores": beam_scores,
            "beam_indices": beam_indices,
            "is_sent_finished": is_sent_finished,
            "heuristic_unsatisfied": heuristic_unsatisfied,
            "finished": ~(improvement_possible & exists_open_beam & valid_continuations),
            "scores": scores_acc,
        }
        reorder = tf.reshape(tf.gather(running_beam_indices, cur_len - 1, axis=2), [-1])
        return new_state, reorder, next_len

    first_tokens = tf.reshape(running_sequences[:, :, :1], [B * K, 1])
    raw, cache = step.first(first_tokens)
    s, reorder, cur_len = advance(state0, raw, tf.constant(1))
    cache = step.reorder(cache, reorder)

    def cond(s, cache, cur_len):
        return (cur_len < M) & ~s["finished"]

    def body(s, cache, cur_len):
        tokens = tf.reshape(tf.gather(s["running_sequences"], cur_len - 1, axis=2), [B * K, 1])
        raw, cache = step.next(tokens, cache, cur_len)
        s, reorder, next_len = advance(s, raw, cur_len)
        return s, step.reorder(cache, reorder), next_len

    s, cache, cur_len = tf.while_loop(cond, body, (s, cache, cur_len), maximum_iterations=M - 2)

    R = options.num_return_sequences
    sequences = tf.reshape(s["sequences"][:, :R], [B * R, M])
    beam_scores = tf.reshape(s["beam_scores"][:, :R], [B * R])
    beam_indices = tf.reshape(s["beam_indices"][:, :R], [B * R, G])
    generated = tf.reduce_max(tf.reduce_sum(tf.cast(beam_indices >= 0, tf.int32), axis=1))
    return {
        "sequences": sequences,
        "length": 1 + generated,
        "sequences_scores": beam_scores,
        "beam_indices": beam_indices,
        "scores": s["scores"],
        "steps": cur_len - 1,
    }


def run(generator, encoder_hidden, encoder_mask, options: DecodingOptions, batch_size, vocab_size: int,
        rows_per_hypothesis: int = 1, doc_scores=None, prefix_allowed_tokens_fn=None, logits_processor=(),
        seed=None) -> dict:
    """Expand the encoder output over beams, then greedy or beam search. Fixed shapes throughout."""
    K = options.num_beams
    if K > 1:
        def expand(t):
            shape = tf.shape(t)
            t = tf.reshape(t, tf.concat([[batch_size, 1, rows_per_hypothesis], shape[1:]], 0))
            t = tf.repeat(t, K, axis=1)
            return tf.reshape(t, tf.concat([[-1], shape[1:]], 0))

        encoder_hidden, encoder_mask = expand(encoder_hidden), expand(encoder_mask)
        if doc_scores is not None:
            doc_scores = tf.repeat(doc_scores, K, axis=0)
    step = GeneratorStep(generator, encoder_hidden, encoder_mask, options.max_length, rows_per_hypothesis, doc_scores)
    processor = LogitsProcessor(options, vocab_size, prefix_allowed_tokens_fn, logits_processor)
    if K == 1:
        return greedy_search(step, options, batch_size, processor, seed)
    return beam_search(step, options, batch_size, processor)


def finalize(result: dict, options: DecodingOptions) -> dict:
    """Eagerly cut the fixed-size buffers to the generated length (outside any compiled function)."""
    length = int(result["length"])
    out = {"sequences": result["sequences"][:, :length]}
    if "sequences_scores" in result:
        out["sequences_scores"] = result["sequences_scores"]
        out["beam_indices"] = result["beam_indices"][:, : length - 1]
    if options.output_scores:
        steps = int(result.get("steps", length - 1))
        out["scores"] = tuple(tf.unstack(result["scores"][:steps]))
    return out

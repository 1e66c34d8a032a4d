"""`TFRagSequenceForGeneration`: RAG-Sequence, one passage per whole output sequence."""

from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from rag_core.arguments import (
    RagInputError,
    check_num_return_sequences,
    resolve,
    resolve_bos_token_id,
    resolve_n_docs,
    resolve_rescore,
)
from rag_core.configuration_rag import RagConfig
from rag_core.outputs import RetrievAugGenerateOutput, RetrievAugLMMarginOutput

from . import decoding, generation_utils, losses
from .rag_pretrained_model import _TFRagHead, unpack_mapping_input


class TFRagSequenceForGeneration(_TFRagHead):
    """RAG-Sequence: p(y|x) = sum_z p(z|x) prod_t p(y_t|x,z,y_<t).

        >>> model = TFRagSequenceForGeneration(config, retriever=retriever)   # doctest: +SKIP
        >>> out = model(input_ids, attention_mask=mask, labels=labels)         # doctest: +SKIP
        >>> ids = model.generate(input_ids, num_beams=4)                       # doctest: +SKIP

    `generate` is batched over examples: the generator decodes all `B*N` (passage, question) pairs
    at once, candidates are deduplicated by ids, then rescored against the passages already
    retrieved (`rescore="thorough"`, every candidate under every passage) or, cheaper, under the
    passages that produced them (`rescore="fast"`). No second retrieval.
    """

    def __init__(
        self,
        config: Optional[RagConfig] = None,
        question_encoder=None,
        generator=None,
        retriever: Any = None,
        **kwargs,
    ):
        super().__init__(config=config, question_encoder=question_encoder, generator=generator, retriever=retriever,
                         **kwargs)

    @unpack_mapping_input
    def call(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_outputs=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        past_key_values=None,
        context_input_ids=None,
        context_attention_mask=None,
        doc_scores=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        output_retrieved=None,
        exclude_bos_score=None,
        reduce_loss=None,
        labels=None,
        n_docs=None,
        training=False,
        **kwargs,
    ) -> RetrievAugLMMarginOutput:
        """Forward pass; with `labels`, the RAG-Sequence loss (`(B,)`, or `()` with `reduce_loss`).

        `**kwargs` are accepted and ignored, as in `rag_pt`."""
        exclude_bos_score = resolve(exclude_bos_score, self.config.exclude_bos_score)
        reduce_loss = resolve(reduce_loss, self.config.reduce_loss)
        arguments = dict(
            input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
            past_key_values=past_key_values, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask, doc_scores=doc_scores, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            output_retrieved=output_retrieved, exclude_bos_score=exclude_bos_score, reduce_loss=reduce_loss,
            labels=labels, n_docs=n_docs, training=training,
        )
        if self._call_as_graph(arguments):
            return self._graph_call(arguments)
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
            context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask,
            doc_scores=doc_scores,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_retrieved=output_retrieved,
            n_docs=n_docs,
            training=training,
        )
        n_docs = outputs.doc_scores.shape[1] or resolve_n_docs(n_docs, self.config.n_docs)

        loss = None
        if labels is not None:
            loss = self.get_nll(outputs.logits, outputs.doc_scores, labels, reduce_loss=reduce_loss,
                                epsilon=self.config.label_smoothing, exclude_bos_score=exclude_bos_score,
                                n_docs=n_docs)

        return RetrievAugLMMarginOutput(loss=loss, **dict(outputs.items()))

    def get_nll(self, seq_logits, doc_scores, target, reduce_loss=False, epsilon=0.0, exclude_bos_score=False,
                n_docs=None):
        """RAG-Sequence loss of `target` (the labels; shifted left here). `(B,)`, or `()` with `reduce_loss`."""
        n_docs = resolve_n_docs(n_docs, self.config.n_docs)
        pad = self.config.generator.pad_token_id
        return losses.sequence_nll(
            seq_logits, doc_scores, losses.shift_targets_left(target, pad), n_docs=n_docs, pad_token_id=pad,
            bos_token_id=resolve_bos_token_id(self.config), reduce_loss=reduce_loss, epsilon=epsilon,
            exclude_bos_score=exclude_bos_score)

    def generate(
        self,
        input_ids=None,
        attention_mask=None,
        context_input_ids=None,
        context_attention_mask=None,
        doc_scores=None,
        do_deduplication=None,
        num_return_sequences=None,
        num_beams=None,
        n_docs=None,
        rescore="thorough",
        output_provenance=False,
        **model_kwargs,
    ):
        """Decode every (passage, question) pair with the generator, deduplicate, rescore, keep the best.

        `model_kwargs` update the generator's generation config (`max_length`, `min_length`,
        `no_repeat_ngram_size`, ...). Returns `(B * num_return_sequences, S)` ids, or with
        `output_provenance` a `rag_core.RetrievAugGenerateOutput` (passages of each output's question).
        """
        rescore = resolve_rescore(rescore)
        jit_compile = bool(model_kwargs.pop("jit_compile", False))
        seed = model_kwargs.pop("seed", None)
        n_docs_explicit = n_docs is not None
        n_docs = resolve_n_docs(n_docs, self.config.n_docs)
        do_deduplication = resolve(do_deduplication, self.config.do_deduplication)
        # transformers 5 leaves unset generation options None (meaning 1)
        num_return_sequences = resolve(num_return_sequences, self.generation_config.num_return_sequences or 1)
        num_beams = resolve(num_beams, self.generation_config.num_beams or 1)
        for unsupported in ("return_dict_in_generate", "output_scores", "num_return_sequences"):
            if model_kwargs.pop(unsupported, None):
                raise ValueError(
                    f"TFRagSequenceForGeneration.generate does not take {unsupported}; use output_provenance=True")

        context_input_ids, context_attention_mask, doc_scores, doc_ids, n_docs = generation_utils.context_for_generate(
            self.rag, input_ids, attention_mask, context_input_ids, context_attention_mask, doc_scores, n_docs,
            n_docs_explicit)
        if doc_scores is None:
            raise RagInputError("`doc_scores` are required with `context_input_ids` (shape (batch_size, n_docs))")
        check_num_return_sequences(num_return_sequences, n_docs * num_beams)

        # 1. every (passage, question) pair through the generator's own decoding (beams per pair)
        generation_config = generation_utils.resolve_generation_config(
            self.generator, None, dict(model_kwargs, num_beams=num_beams, num_return_sequences=num_beams))
        # the generator's own `generate` in rag_pt: an unset max_length means 20 new tokens after the
        # start token under transformers 5 (20 tokens in all under 4.x, where it is never unset)
        options = decoding.DecodingOptions.from_generation_config(generation_config, self.config.generator,
                                                                  default_max_length=21)
        decode = generation_utils.cached_decode_function(
            self, ("sequence", options, jit_compile),
            lambda: generation_utils.make_decode_function(self.generator, options, 1, False, jit_compile))
        raw = decode(context_input_ids, context_attention_mask, None, generation_utils.sampling_seed(options, seed))
        generated = decoding.finalize(raw, options)

        # 2. deduplicate, rescore and keep the best, all examples at once, as one cached graph
        # the Python settings are bound into the cached function, only tensors are passed per call: a
        # Python object argument would key the trace by identity and retrace on every call
        select = generation_utils.cached_decode_function(
            self, ("sequence-rescore", options, n_docs, num_beams, do_deduplication, rescore, num_return_sequences),
            lambda: tf.function(functools.partial(
                self._rescore_and_select, options=options, n_docs=n_docs, num_beams=num_beams,
                do_deduplication=do_deduplication, rescore=rescore, num_return_sequences=num_return_sequences),
                reduce_retracing=True))
        output, top_scores = select(generated, raw["encoder_hidden"], context_attention_mask, doc_scores)
        if not output_provenance:
            return output
        ids = None if doc_ids is None else np.repeat(np.asarray(doc_ids), num_return_sequences, axis=0)
        return RetrievAugGenerateOutput(
            sequences=output,
            doc_ids=ids,
            doc_scores=tf.repeat(doc_scores, num_return_sequences, axis=0),
            doc_titles=generation_utils.doc_titles(self.retriever, ids),
            sequences_scores=tf.reshape(top_scores, [-1]),
        )

    def _rescore_and_select(self, generated, encoder_states, context_attention_mask, doc_scores, options, n_docs,
                            num_beams, do_deduplication, rescore, num_return_sequences):
        """`(B*R, S)` best ids and their `(B, R)` scores; fewer unique candidates than asked: pad rows, -inf."""
        sequences, scores = self._rescore(generated, options, encoder_states, context_attention_mask, doc_scores,
                                          n_docs, num_beams, do_deduplication, rescore)
        top_scores, top = tf.math.top_k(scores, k=num_return_sequences)  # (B, R)
        chosen = tf.gather(sequences, top, batch_dims=1)
        chosen = tf.where(tf.math.is_inf(top_scores)[:, :, None], self.config.generator.pad_token_id, chosen)
        return tf.reshape(chosen, [-1, tf.shape(sequences)[-1]]), top_scores

    def _rescore(self, generated, options, encoder_states, context_attention_mask, doc_scores, n_docs, num_beams,
                 do_deduplication, rescore):
        """Candidates `(B*N*K, S)` -> (`(B, C, S)` unique candidates, `(B, C)` log p(y|x); -inf = no candidate).

        `encoder_states`: `(B*N, L, H)`, the generator's encoder output the decoding already computed."""
        candidates = generated["sequences"]
        length = tf.shape(candidates)[1]
        per_example = n_docs * num_beams
        cands = tf.reshape(candidates, [-1, per_example, length])  # (B, NK, S): (passage, beam) order
        batch = tf.shape(cands)[0]
        same = tf.reduce_all(tf.equal(cands[:, :, None, :], cands[:, None, :, :]), axis=-1)  # (B, NK, NK)
        earlier = tf.linalg.band_part(tf.ones([per_example, per_example], tf.bool), -1, 0) & ~tf.eye(
            per_example, dtype=tf.bool)  # [i, j]: j < i
        duplicate = tf.reduce_any(same & earlier[None], axis=2) if do_deduplication else tf.zeros(
            [batch, per_example], tf.bool)
        doc_logprobs = tf.nn.log_softmax(doc_scores, axis=1)  # (B, N)

        if rescore == "fast":
            # the paper's fast decoding: log p(y|x) ~ logsumexp over the passages that produced y of
            # log p(z|x) + log p(y|x,z): the beam's score with its length normalisation undone (as
            # rag_pt); greedy keeps no score, so the path is scored under its own passage.
            if "sequences_scores" in generated:
                own = self._beam_logprob_sums(generated, options, candidates)
            else:
                rows = tf.range(batch * n_docs)
                own = self._sequence_logliks(encoder_states, context_attention_mask, candidates, rows, batch * n_docs,
                                             exclude_bos=False)
            own = tf.reshape(own, [batch, per_example])
            own = own + tf.repeat(doc_logprobs, num_beams, axis=1)
            if do_deduplication:
                scores = tf.reduce_logsumexp(tf.where(same, own[:, None, :], float("-inf")), axis=2)
            else:
                scores = own
            scores = tf.where(duplicate, float("-inf"), scores)
            return cands, scores

        # thorough: compact the unique candidates, score each under every passage of its question
        keep = ~duplicate
        order = tf.argsort(tf.cast(duplicate, tf.int32), axis=1, stable=True)
        cands = tf.gather(cands, order, batch_dims=1)
        keep = tf.gather(keep, order, batch_dims=1)
        width = tf.reduce_max(tf.reduce_sum(tf.cast(keep, tf.int32), axis=1))
        cands, keep = cands[:, :width], keep[:, :width]
        labels = tf.reshape(cands, [-1, length])  # (B*C, S)
        example = tf.repeat(tf.range(batch), width)  # (B*C,)
        rows = tf.reshape(example[:, None] * n_docs + tf.range(n_docs)[None, :], [-1])  # (B*C*N,)
        logliks = self._sequence_logliks(tf.gather(encoder_states, rows), tf.gather(context_attention_mask, rows),
                                         tf.repeat(labels, n_docs, axis=0), tf.repeat(example, n_docs), batch,
                                         valid=tf.repeat(tf.reshape(keep, [-1]), n_docs))
        logliks = tf.reshape(logliks, [batch, width, n_docs]) + doc_logprobs[:, None, :]
        scores = tf.where(keep, tf.reduce_logsumexp(logliks, axis=2), float("-inf"))
        return cands, scores

    @staticmethod
    def _beam_logprob_sums(generated, options, sequences):
        """Sum of the beam's token log-probs: `sequences_scores * generated_length ** length_penalty`."""
        body = sequences[:, 1:]
        is_eos = decoding._isin(body, options.eos_token_ids)
        first_eos = tf.argmax(tf.cast(is_eos, tf.int32), axis=1, output_type=tf.int32) + 1
        non_pad = tf.reduce_sum(tf.cast(tf.not_equal(body, options.pad_token_id), tf.int32), axis=1)
        lengths = tf.where(tf.reduce_any(is_eos, axis=1), first_eos, non_pad)
        return generated["sequences_scores"] * tf.cast(lengths, tf.float32) ** options.length_penalty

    def _sequence_logliks(self, hidden, encoder_mask, labels, example, batch, valid=None, exclude_bos=True):
        """Per row: sum_t log p(target_t | ...) with `exclude_bos_score` semantics per question
        (the first token is dropped when every candidate of that question starts with BOS, as the
        original's per-question rescoring does)."""
        pad = self.config.generator.pad_token_id
        out = self.generator(input_ids=None, attention_mask=encoder_mask,
                             encoder_outputs=generation_utils.encoder_output(hidden), decoder_input_ids=labels,
                             use_cache=False, training=False)
        logits = tf.cast(out.logits, tf.float32)
        target = losses.shift_targets_left(labels, pad)
        token_lp = tf.gather(logits, target, batch_dims=2) - tf.reduce_logsumexp(logits, axis=-1)
        weights = tf.cast(tf.not_equal(target, pad), tf.float32)
        bos = resolve_bos_token_id(self.config)
        if bos is not None and exclude_bos:
            starts_bos = tf.equal(target[:, 0], bos)
            if valid is not None:
                starts_bos = starts_bos | ~valid
            all_bos = tf.math.unsorted_segment_min(tf.cast(starts_bos, tf.int32), example, batch)  # per question
            drop = tf.cast(tf.gather(all_bos, example), tf.float32)
            weights = weights * (1.0 - drop[:, None] * tf.one_hot(0, tf.shape(target)[1])[None, :])
        return tf.reduce_sum(token_lp * weights, axis=1)

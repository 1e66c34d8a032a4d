"""`TFRagSequenceForGeneration`: RAG-Sequence, one passage per whole output sequence."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from rag_core.arguments import (
    RagInputError,
    check_generate_options,
    generator_max_positions,
    check_num_return_sequences,
    resolve,
    resolve_bos_token_id,
    resolve_n_docs,
    resolve_rescore,
)
from rag_core.configuration_rag import RagConfig
from rag_core.generation import rank_candidates
from rag_core.outputs import RetrievAugGenerateOutput, RetrievAugLMMarginOutput

from . import decoding, generation_utils, losses
from .rag_model import check_inputs
from .rag_pretrained_model import _TFRagHead, unpack_mapping_input


class TFRagSequenceForGeneration(_TFRagHead):
    """RAG-Sequence: p(y|x) = sum_z p(z|x) prod_t p(y_t|x,z,y_<t).

        >>> model = TFRagSequenceForGeneration(config, retriever=retriever)   # doctest: +SKIP
        >>> out = model(input_ids, attention_mask=mask, labels=labels)         # doctest: +SKIP
        >>> ids = model.generate(input_ids, num_beams=4)                       # doctest: +SKIP

    `generate` is batched over examples: the generator decodes all `B*N` (passage, question) pairs
    at once, candidates are deduplicated by ids, then rescored against the passages already
    retrieved (`rescore="thorough"`, every candidate under every passage) or, cheaper, under the
    passages that produced them (`rescore="fast"`). No second retrieval. The candidate bookkeeping
    is `rag_core.generation.rank_candidates`, shared with rag_pt; the decoding and the generator's
    scoring pass are compiled `tf.function`s.
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
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, labels=labels, doc_scores=doc_scores,
            context_input_ids=context_input_ids, context_attention_mask=context_attention_mask,
        )
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
        """RAG-Sequence loss of `target` (the labels, unshifted). `(B,)`, or `()` with `reduce_loss`."""
        return losses.sequence_nll(
            seq_logits, doc_scores, target, n_docs=resolve_n_docs(n_docs, self.config.n_docs),
            pad_token_id=self.config.generator.pad_token_id, reduce_loss=reduce_loss, epsilon=epsilon,
            exclude_bos_score=exclude_bos_score, bos_token_id=resolve_bos_token_id(self.config))

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
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask, doc_scores=doc_scores,
        )
        check_generate_options(  # the candidates per question are n_docs * num_beams: checked once n_docs is known
            self.generator.generation_config, model_kwargs, num_beams=num_beams,
            num_return_sequences=num_return_sequences, max_positions=generator_max_positions(self.config.generator),
            beams_bound_return_sequences=False,
        )
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

        # 2. deduplicate, rank and select on the host (rag_core.generation); the generator scores
        sequences, top_scores = rank_candidates(
            generation_utils.to_numpy(generated["sequences"]),
            generation_utils.to_numpy(doc_scores),
            lambda plan, with_smooth: generation_utils.score_candidates(
                self, raw["encoder_hidden"], context_attention_mask, plan, with_smooth),
            num_beams=num_beams,
            rescore=rescore,
            do_deduplication=do_deduplication,
            num_return_sequences=num_return_sequences,
            pad_token_id=self.config.generator.pad_token_id,
            bos_token_id=resolve_bos_token_id(self.config),
            vocab_size=self.generator.config.vocab_size,
            epsilon=self.config.label_smoothing,
            # greedy search keeps no sequence scores: "fast" then scores each path under its own passage
            sequences_scores=(generation_utils.to_numpy(generated["sequences_scores"])
                              if "sequences_scores" in generated else None),
            eos_token_ids=options.eos_token_ids,
            length_penalty=options.length_penalty,
        )
        output = tf.constant(sequences, tf.int32)
        if not output_provenance:
            return output
        ids = None if doc_ids is None else np.repeat(np.asarray(doc_ids), num_return_sequences, axis=0)
        return RetrievAugGenerateOutput(
            sequences=output,
            doc_ids=ids,
            doc_scores=tf.repeat(doc_scores, num_return_sequences, axis=0),
            doc_titles=generation_utils.doc_titles(self.retriever, ids),
            sequences_scores=tf.constant(top_scores.reshape(-1), tf.float32),
        )

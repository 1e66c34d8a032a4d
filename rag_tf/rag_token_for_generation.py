"""`TFRagTokenForGeneration`: RAG-Token, marginalising over passages at every target token."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from rag_core.arguments import (
    RagInputError,
    check_generate_options,
    generator_max_positions,
    resolve,
    resolve_bos_token_id,
    resolve_n_docs,
)
from rag_core.configuration_rag import RagConfig
from rag_core.outputs import RetrievAugGenerateOutput, RetrievAugLMMarginOutput

from . import decoding, generation_utils, losses
from .rag_model import check_inputs
from .rag_pretrained_model import _TFRagHead, unpack_mapping_input


class TFRagTokenForGeneration(_TFRagHead):
    """RAG-Token: p(y|x) = prod_t sum_z p(z|x) p(y_t|x,z,y_<t).

        >>> model = TFRagTokenForGeneration(config, retriever=retriever)           # doctest: +SKIP
        >>> out = model(input_ids, attention_mask=mask, labels=labels)              # doctest: +SKIP
        >>> out.loss.shape                               # (B,) unless reduce_loss  # doctest: +SKIP
        >>> ids = model.generate(input_ids, num_beams=4, jit_compile=True)          # doctest: +SKIP

    `generate` runs greedy or beam search as a fixed-shape `tf.while_loop` (see `decoding.py`); with
    `jit_compile=True` the generator's encoder and the whole loop are XLA-compiled (retrieval runs
    before, eagerly). Ids equal those of `rag_pt.RagTokenForGeneration` on the same weights.
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
        do_marginalize=None,
        reduce_loss=None,
        labels=None,
        n_docs=None,
        exclude_bos_score=None,
        training=False,
        **kwargs,
    ) -> RetrievAugLMMarginOutput:
        """Forward pass; with `labels`, the RAG-Token loss. `do_marginalize` returns `(B, T, V)` log-probs.

        `**kwargs` are accepted and ignored, as in `rag_pt` (generation utilities pass extra keys)."""
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, labels=labels, doc_scores=doc_scores,
            context_input_ids=context_input_ids, context_attention_mask=context_attention_mask,
        )
        do_marginalize = resolve(do_marginalize, self.config.do_marginalize)
        reduce_loss = resolve(reduce_loss, self.config.reduce_loss)
        exclude_bos_score = resolve(exclude_bos_score, self.config.exclude_bos_score)
        arguments = dict(
            input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
            past_key_values=past_key_values, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask, doc_scores=doc_scores, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            output_retrieved=output_retrieved, do_marginalize=do_marginalize, reduce_loss=reduce_loss, labels=labels,
            n_docs=n_docs, exclude_bos_score=exclude_bos_score, training=training,
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
        fields = dict(outputs.items())
        if do_marginalize:
            fields["logits"] = self.marginalize(outputs.logits, outputs.doc_scores, n_docs)
        return RetrievAugLMMarginOutput(loss=loss, **fields)

    def marginalize(self, seq_logits, doc_scores, n_docs=None):
        """`(B*N, T, V)` logits -> `(B, T, V)` log-probabilities marginalised over the passages."""
        n_docs = resolve_n_docs(n_docs, self.config.n_docs)
        return losses.marginalize_token_logprobs(seq_logits, doc_scores, n_docs)

    def get_nll(self, seq_logits, doc_scores, target, reduce_loss=False, epsilon=0.0, exclude_bos_score=False,
                n_docs=None):
        """RAG-Token loss of `target` (the labels, unshifted). `(B,)`, or `()` with `reduce_loss`."""
        return losses.token_nll(
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
        n_docs=None,
        generation_config=None,
        prefix_allowed_tokens_fn=None,
        logits_processor=None,
        stopping_criteria=None,
        output_provenance=False,
        **kwargs,
    ):
        """Greedy (`num_beams=1`) or beam-search decoding over the marginal of each token.

        Options come from `generation_config` (default: the model's) updated with `kwargs`:
        `max_length`/`max_new_tokens`, `min_length`, `num_beams`, `num_return_sequences`,
        `no_repeat_ngram_size`, `repetition_penalty`, `forced_bos_token_id`, `forced_eos_token_id`,
        `suppress_tokens`, `bad_words_ids`, `length_penalty`, `early_stopping`, `output_scores`,
        `return_dict_in_generate`, and sampling (`do_sample=True` with `temperature`, `top_k`,
        `top_p`; `seed=` makes it reproducible). TF-only: `jit_compile=True` XLA-compiles encoder
        and loop.
        `logits_processor`: extra callables `(sequences, scores, cur_len) -> scores`, run last.

        Returns `(B*R, S)` ids; with `return_dict_in_generate` a `GenerateOutput` (sequences, scores, sequences_scores);
        with `output_provenance` a `rag_core.RetrievAugGenerateOutput`.
        """
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask, doc_scores=doc_scores,
        )
        check_generate_options(
            generation_config if generation_config is not None else self.generation_config, kwargs,
            max_positions=generator_max_positions(self.config.generator),
        )
        jit_compile = bool(kwargs.pop("jit_compile", False))
        seed = kwargs.pop("seed", None)
        if stopping_criteria:
            raise NotImplementedError("custom stopping_criteria are not supported by the TF RAG decoder; "
                                      "use max_length / max_new_tokens / eos_token_id")
        n_docs_explicit = n_docs is not None
        n_docs = resolve_n_docs(n_docs, self.config.n_docs)
        generation_config = generation_utils.resolve_generation_config(self, generation_config, kwargs)
        options = decoding.DecodingOptions.from_generation_config(generation_config, self.config.generator)

        context_input_ids, context_attention_mask, doc_scores, doc_ids, n_docs = generation_utils.context_for_generate(
            self.rag, input_ids, attention_mask, context_input_ids, context_attention_mask, doc_scores, n_docs,
            n_docs_explicit)
        if doc_scores is None:
            raise RagInputError("`doc_scores` are required with `context_input_ids` (shape (batch_size, n_docs))")

        extra = tuple(logits_processor or ())
        factory = lambda: generation_utils.make_decode_function(  # noqa: E731
            self.generator, options, n_docs, True, jit_compile, prefix_allowed_tokens_fn, extra)
        if prefix_allowed_tokens_fn is None and not extra:
            decode = generation_utils.cached_decode_function(self, ("token", options, n_docs, jit_compile), factory)
        else:
            decode = factory()
        result = decoding.finalize(decode(context_input_ids, context_attention_mask, doc_scores,
                                          generation_utils.sampling_seed(options, seed)), options)
        return self._generate_output(result, options, doc_scores, doc_ids, output_provenance)

    def _generate_output(self, result, options, doc_scores, doc_ids, output_provenance):
        sequences = result["sequences"]
        if output_provenance:
            repeat = options.num_return_sequences
            ids = None if doc_ids is None else np.repeat(np.asarray(doc_ids), repeat, axis=0)
            return RetrievAugGenerateOutput(
                sequences=sequences,
                doc_ids=ids,
                doc_scores=tf.repeat(doc_scores, repeat, axis=0),
                doc_titles=generation_utils.doc_titles(self.retriever, ids),
                sequences_scores=result.get("sequences_scores"),
                scores=result.get("scores"),
            )
        if not options.return_dict_in_generate:
            return sequences
        return generation_utils.GenerateOutput(sequences=sequences, sequences_scores=result.get("sequences_scores"),
                                               scores=result.get("scores"),
                                               beam_indices=result.get("beam_indices"))

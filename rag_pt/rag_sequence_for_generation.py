"""`RagSequenceForGeneration`: one passage per whole answer, `p(y|x) = sum_z p(z|x) prod_t p(y_t|x, z, y_<t)`.

Generation is batched over questions: one beam search over all `B * n_docs` contexts, then
deduplication of the candidates by token ids and a rescoring of every candidate against all the
passages already retrieved for its question ("thorough"), or a ranking by beam score plus passage
log-probability ("fast", the paper's fast decoding: a passage that did not produce a candidate
contributes nothing to it).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from rag_core import RagConfig, RetrievAugGenerateOutput, RetrievAugLMMarginOutput, compat
from rag_core.arguments import (
    check_generate_inputs,
    check_num_return_sequences,
    resolve,
    resolve_bos_token_id,
    resolve_n_docs,
    resolve_rescore,
)

from . import generation_utils, losses
from .rag_pretrained_model import _RagHead


class RagSequenceForGeneration(_RagHead):
    """RAG-Sequence: forward with `labels` gives the marginal NLL; `generate` decodes per passage and rescores.

    Example:
        >>> model = RagSequenceForGeneration(config, retriever=retriever)
        >>> loss = model(input_ids=q["input_ids"], labels=answers["input_ids"]).loss
        >>> ids = model.generate(input_ids=q["input_ids"], num_beams=4, num_return_sequences=2)
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
        exclude_bos_score: Optional[bool] = None,
        reduce_loss: Optional[bool] = None,
        labels: Optional[Tensor] = None,
        n_docs: Optional[int] = None,
        **kwargs,
    ) -> RetrievAugLMMarginOutput:
        """As `RagModel.forward`; with `labels`, also the loss (`labels` are the decoder input when
        `decoder_input_ids` is None, and the loss target is `labels` shifted left)."""
        exclude_bos_score = resolve(exclude_bos_score, self.config.exclude_bos_score)
        reduce_loss = resolve(reduce_loss, self.config.reduce_loss)
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
        loss = None
        if labels is not None:
            loss = self.get_nll(
                outputs.logits,
                outputs.doc_scores,
                labels,
                reduce_loss=reduce_loss,
                epsilon=self.config.label_smoothing,
                exclude_bos_score=exclude_bos_score,
                n_docs=outputs.doc_scores.shape[1],
            )
        return RetrievAugLMMarginOutput(loss=loss, **dict(outputs.items()))

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
        """Negative marginal log-likelihood of `target` (the labels, unshifted), `(B,)` or `()` if reduced."""
        return losses.sequence_nll(
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
        do_deduplication: Optional[bool] = None,
        num_return_sequences: Optional[int] = None,
        num_beams: Optional[int] = None,
        n_docs: Optional[int] = None,
        rescore: str = "thorough",
        output_provenance: bool = False,
        **model_kwargs,
    ) -> Any:
        """Beam search per passage, deduplicate per question, rank, return the best `num_return_sequences`.

        Returns `(B * num_return_sequences, S)` ids, or with `output_provenance=True` a
        `RetrievAugGenerateOutput` whose `sequences_scores` are the ranking scores (the marginal
        log-likelihood for "thorough", beam score + log p(z|x) for "fast"). Other keyword arguments
        go to the generator's `generate` (e.g. `max_length`, `min_length`, `length_penalty`).
        """
        rescore = resolve_rescore(rescore)
        do_deduplication = resolve(do_deduplication, self.config.do_deduplication)
        num_beams = resolve(num_beams, getattr(self.config, "num_beams", 1))
        num_return_sequences = resolve(num_return_sequences, getattr(self.config, "num_return_sequences", 1))
        for unsupported in ("return_dict_in_generate", "output_scores"):
            if model_kwargs.pop(unsupported, None):
                raise ValueError(f"RagSequenceForGeneration.generate does not take {unsupported}; use output_provenance=True")
        check_generate_inputs(
            has_input_ids=input_ids is not None,
            has_context=context_input_ids is not None,
            has_retriever=self.retriever is not None,
        )
        context = generation_utils.prepare_context(
            self.rag, input_ids, attention_mask, context_input_ids, context_attention_mask, doc_scores, n_docs
        )
        batch_size, n_docs = context.doc_scores.shape
        check_num_return_sequences(num_return_sequences, n_docs * num_beams)

        # 1. Encode every context once; beam search on all B * N contexts at once.
        encoder_states = self.generator.get_encoder()(
            input_ids=context.context_input_ids, attention_mask=context.context_attention_mask, return_dict=True
        ).last_hidden_state
        gen = self.generator.generate(
            # a fresh container: generate expands the tensors of the one it gets, in place
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states),
            attention_mask=context.context_attention_mask,
            num_beams=num_beams,
            num_return_sequences=num_beams,
            output_scores=rescore == "fast",
            return_dict_in_generate=True,
            **{**compat.cache_kwargs(generation_utils.new_beam_cache()), **model_kwargs},
        )
        # (B, C, S) candidates per question, C = N * beams, grouped by passage
        candidates = gen.sequences.view(batch_size, n_docs * num_beams, -1)
        pad_token_id = self.config.generator.pad_token_id
        same = generation_utils.same_sequences(candidates)
        unique = generation_utils.first_occurrences(same) if do_deduplication else torch.ones_like(same[:, :, 0])
        doc_logprobs = F.log_softmax(context.doc_scores.float(), dim=1)

        # 2. Rank the candidates of each question.
        if rescore == "fast":
            beam_logprobs = generation_utils.beam_logprob_sums(
                gen.sequences_scores, gen.sequences, self.generator.generation_config, model_kwargs
            ).view(batch_size, n_docs, num_beams)
            own = (beam_logprobs + doc_logprobs[:, :, None]).view(batch_size, n_docs * num_beams)
            if do_deduplication:
                # a candidate found from several passages collects all of them
                scores = own[:, None, :].expand(-1, own.shape[1], -1).masked_fill(~same, float("-inf")).logsumexp(-1)
            else:
                scores = own
        else:
            scores = self._rescore(candidates, unique, encoder_states, context, doc_logprobs)
        scores = scores.masked_fill(~unique, float("-inf"))

        # 3. The best `num_return_sequences` per question (fewer unique candidates: pad rows, score -inf).
        top_scores, top = scores.topk(num_return_sequences, dim=1)
        sequences = candidates.gather(1, top[:, :, None].expand(-1, -1, candidates.shape[-1]))
        sequences = sequences.masked_fill(torch.isinf(top_scores)[:, :, None], pad_token_id)
        sequences = sequences.reshape(batch_size * num_return_sequences, -1)
        if not output_provenance:
            return sequences
        return generation_utils.provenance(
            self.retriever,
            sequences=sequences,
            doc_ids=context.doc_ids,
            doc_scores=context.doc_scores,
            repeats=num_return_sequences,
            sequences_scores=top_scores.reshape(-1),
        )

    def _rescore(
        self,
        candidates: Tensor,
        unique: Tensor,
        encoder_states: Tensor,
        context: "generation_utils.Context",
        doc_logprobs: Tensor,
    ) -> Tensor:
        """`-loss` of every unique candidate against all passages of its question, `(B, C)` (-inf elsewhere).

        The same score as the loss of `forward(labels=candidate, exclude_bos_score=True)`, computed on the
        generator-encoder states of the first pass instead of a second retrieval and encoding.
        """
        batch_size, num_candidates, length = candidates.shape
        n_docs = doc_logprobs.shape[1]
        pad_token_id = self.config.generator.pad_token_id
        epsilon = self.config.label_smoothing
        question, slot = unique.nonzero(as_tuple=True)  # the K candidates to score
        labels = candidates[question, slot]  # (K, S)
        target = losses.shift_targets_left(labels, pad_token_id)
        bos_token_id = resolve_bos_token_id(self.config)
        # exclude_bos_score, decided per question over its candidates (as one rescoring batch in the original)
        exclude = torch.zeros(batch_size, dtype=torch.bool, device=labels.device)
        if bos_token_id is not None:
            starts_with_bos = target[:, 0].eq(bos_token_id)
            not_bos = torch.zeros(batch_size, dtype=torch.long, device=labels.device)
            not_bos.index_add_(0, question, (~starts_with_bos).long())
            exclude = not_bos.eq(0)
        token_lp, smooth_lp = generation_utils.score_candidates(
            self.generator,
            encoder_states,
            context.context_attention_mask,
            question,
            labels,
            target,
            n_docs,
            with_smooth=epsilon != 0.0,
        )
        ll, smooth = losses.sequence_marginal(
            token_lp,
            smooth_lp,
            doc_logprobs[question],
            target.ne(pad_token_id),
            exclude[question],
            self.generator.config.vocab_size,
        )
        loss = losses.combine_nll(ll, smooth, epsilon, self.generator.config.vocab_size)
        scores = torch.full((batch_size, num_candidates), float("-inf"), device=loss.device)
        scores[question, slot] = -loss
        return scores

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
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from rag_core import RagConfig, RetrievAugGenerateOutput, RetrievAugLMMarginOutput, compat
from rag_core.arguments import (
    check_generate_inputs,
    check_generate_options,
    generator_max_positions,
    check_num_return_sequences,
    resolve,
    resolve_bos_token_id,
    resolve_n_docs,
    resolve_rescore,
)
from rag_core.generation import rank_candidates

from . import generation_utils, losses
from .rag_model import check_inputs
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
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, labels=labels, doc_scores=doc_scores,
            context_input_ids=context_input_ids, context_attention_mask=context_attention_mask,
        )
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
        log-likelihood, with label smoothing as in the loss, for "thorough"; for "fast", logsumexp over
        the passages that produced the candidate of log p(z|x) + its log-likelihood under that passage:
        the beam score with the length normalisation undone, or with greedy decoding the path's
        log-likelihood). Other keyword arguments go to the generator's `generate` (e.g. `max_length`,
        `min_length`, `length_penalty`). The candidate bookkeeping is `rag_core.generation.rank_candidates`.
        """
        rescore = resolve_rescore(rescore)
        do_deduplication = resolve(do_deduplication, self.config.do_deduplication)
        num_beams = resolve(num_beams, getattr(self.config, "num_beams", 1))
        num_return_sequences = resolve(num_return_sequences, getattr(self.config, "num_return_sequences", 1))
        check_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask, doc_scores=doc_scores,
        )
        check_generate_options(  # the candidates per question are n_docs * num_beams: checked once n_docs is known
            self.generator.generation_config, model_kwargs, num_beams=num_beams,
            num_return_sequences=num_return_sequences, max_positions=generator_max_positions(self.config.generator),
            beams_bound_return_sequences=False,
        )
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
        # 2. Deduplicate, rank and select on the host (rag_core.generation); the generator scores.
        generation_config = self.generator.generation_config
        sequences, top_scores = rank_candidates(
            generation_utils.to_numpy(gen.sequences),
            generation_utils.to_numpy(context.doc_scores),
            lambda plan, with_smooth: generation_utils.score_candidates(
                self, encoder_states, context.context_attention_mask, plan, with_smooth
            ),
            num_beams=num_beams,
            rescore=rescore,
            do_deduplication=do_deduplication,
            num_return_sequences=num_return_sequences,
            pad_token_id=self.config.generator.pad_token_id,
            bos_token_id=resolve_bos_token_id(self.config),
            vocab_size=self.generator.config.vocab_size,
            epsilon=self.config.label_smoothing,
            # greedy search keeps no sequence scores: "fast" then scores each path under its own passage
            sequences_scores=(
                generation_utils.to_numpy(gen.sequences_scores) if getattr(gen, "sequences_scores", None) is not None else None
            ),
            eos_token_ids=compat.generation_setting(generation_config, "eos_token_id", model_kwargs),
            length_penalty=compat.generation_setting(generation_config, "length_penalty", model_kwargs),
        )
        sequences = torch.as_tensor(sequences, device=gen.sequences.device)
        if not output_provenance:
            return sequences
        return generation_utils.provenance(
            self.retriever,
            sequences=sequences,
            doc_ids=context.doc_ids,
            doc_scores=context.doc_scores,
            repeats=num_return_sequences,
            sequences_scores=torch.as_tensor(top_scores.reshape(-1), dtype=torch.float32, device=sequences.device),
        )

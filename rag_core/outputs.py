"""Output containers shared by the PyTorch and TensorFlow models.

Defined once, here, with no framework import: the fields hold `torch.Tensor`, `tf.Tensor` or numpy
arrays depending on who fills them. Every container supports attribute access (`out.logits`), key
access (`out["logits"]`), index access over the fields that are set (`out[0]`) and `to_tuple()`,
like transformers' `ModelOutput`. Fields left as `None` are skipped by key/index access and
`to_tuple()`, so `out[0]` is the loss when a loss was computed and the logits otherwise.

Shape legend: B = batch size, N = n_docs, T = target length, L = context (passage + question)
length, V = vocabulary size, H = hidden size, D = retrieval vector size.

The containers subclass `OrderedDict`, so `tf.nest` / Keras treat them as mappings (they can be
returned from a `tf.function` and from a Keras model's `call`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Optional


class RagOutput(OrderedDict):
    """Base of the output dataclasses: a mapping of the fields that are not `None`."""

    def __post_init__(self):
        field_names = [f.name for f in fields(self)]
        first = getattr(self, field_names[0])
        others_unset = all(getattr(self, name) is None for name in field_names[1:])
        # `tf.nest` rebuilds mappings as `type(m)((key, value) for key in m)`: accept that form.
        pairs = _as_pairs(first) if others_unset and first is not None else None
        if pairs is not None:
            object.__setattr__(self, field_names[0], None)
            for key, value in pairs:
                if key not in field_names:
                    raise KeyError(f"{type(self).__name__} has no field {key!r}")
                setattr(self, key, value)
            return
        for name in field_names:
            value = getattr(self, name)
            if value is not None:
                OrderedDict.__setitem__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in self.__dataclass_fields__:
            # Keep the mapping in field order, so index access stays "first set field first".
            OrderedDict.clear(self)
            for f in fields(self):
                field_value = getattr(self, f.name, None)
                if field_value is not None:
                    OrderedDict.__setitem__(self, f.name, field_value)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.__dataclass_fields__:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def __getitem__(self, key):
        if isinstance(key, str):
            return OrderedDict.__getitem__(self, key)
        return self.to_tuple()[key]

    def __delitem__(self, key):
        raise TypeError(f"{type(self).__name__} fields cannot be deleted; set them to None")

    def to_tuple(self) -> tuple:
        """The values of the fields that are set, in declaration order."""
        return tuple(self[k] for k in self.keys())

    def __reduce__(self):
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))


def _as_pairs(value: Any) -> Optional[list]:
    """`value` as a list of (field name, value) pairs when it is an iterable of such pairs, else None."""
    if isinstance(value, (str, bytes, dict, list, tuple)) or hasattr(value, "shape"):
        # lists/tuples are legitimate field values (e.g. hidden states); only iterators are pairs
        return None
    if not hasattr(value, "__next__"):
        return None
    items = list(value)
    if all(isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], str) for x in items):
        return items
    raise TypeError("a RagOutput built from an iterator expects (field name, value) pairs")


@dataclass(eq=False, repr=True)
class RetrievAugLMOutput(RagOutput):
    """Output of `RagModel` / `TFRagModel`.

    Attributes:
        logits: `(B*N, T, V)` generator logits for every (passage, question) pair.
        doc_scores: `(B, N)` inner products of question and passage vectors (before softmax).
            Invalid (missing) passages score `-inf`-like, so they get zero probability.
        past_key_values: the generator's decoder cache, batch `B*N`.
        retrieved_doc_embeds: `(B, N, D)` passage vectors (with a retriever and `output_retrieved`).
        retrieved_doc_ids: `(B, N)` passage ids (with a retriever and `output_retrieved`); -1 marks
            a slot the index could not fill.
        context_input_ids: `(B*N, L)` generator input ids of the contexts.
        context_attention_mask: `(B*N, L)` attention mask of the contexts.
        question_encoder_last_hidden_state: `(B, D)` question vectors.
        question_enc_hidden_states, question_enc_attentions: per-layer question-encoder states.
        generator_enc_last_hidden_state: `(B*N, L, H)` generator encoder output.
        generator_enc_hidden_states, generator_enc_attentions: per-layer generator-encoder states.
        generator_dec_hidden_states, generator_dec_attentions, generator_cross_attentions: per-layer
            generator-decoder states.
    """

    logits: Any = None
    doc_scores: Any = None
    past_key_values: Any = None
    retrieved_doc_embeds: Any = None
    retrieved_doc_ids: Any = None
    context_input_ids: Any = None
    context_attention_mask: Any = None
    question_encoder_last_hidden_state: Any = None
    question_enc_hidden_states: Any = None
    question_enc_attentions: Any = None
    generator_enc_last_hidden_state: Any = None
    generator_enc_hidden_states: Any = None
    generator_enc_attentions: Any = None
    generator_dec_hidden_states: Any = None
    generator_dec_attentions: Any = None
    generator_cross_attentions: Any = None


@dataclass(eq=False, repr=True)
class RetrievAugLMMarginOutput(RagOutput):
    """Output of `RagSequenceForGeneration` / `RagTokenForGeneration` and TF twins.

    Attributes:
        loss: `()` when reduced, else `(B,)`: negative marginal log-likelihood (with label smoothing).
        logits: `(B*N, T, V)`; for RAG-Token with `do_marginalize=True`, `(B, T, V)` log-probabilities
            marginalised over passages.
        doc_scores: `(B, N)` question/passage inner products.
        past_key_values: the generator's decoder cache, batch `B*N`.
        retrieved_doc_embeds: `(B, N, D)` passage vectors (with a retriever and `output_retrieved`).
        retrieved_doc_ids: `(B, N)` passage ids (with a retriever and `output_retrieved`); -1 = empty slot.
        context_input_ids: `(B*N, L)` generator input ids of the contexts.
        context_attention_mask: `(B*N, L)` attention mask of the contexts.
        question_encoder_last_hidden_state: `(B, D)` question vectors.
        question_enc_hidden_states, question_enc_attentions: per-layer question-encoder states.
        generator_enc_last_hidden_state: `(B*N, L, H)` generator encoder output.
        generator_enc_hidden_states, generator_enc_attentions: per-layer generator-encoder states.
        generator_dec_hidden_states, generator_dec_attentions, generator_cross_attentions: per-layer
            generator-decoder states.
    """

    loss: Any = None
    logits: Any = None
    doc_scores: Any = None
    past_key_values: Any = None
    retrieved_doc_embeds: Any = None
    retrieved_doc_ids: Any = None
    context_input_ids: Any = None
    context_attention_mask: Any = None
    question_encoder_last_hidden_state: Any = None
    question_enc_hidden_states: Any = None
    question_enc_attentions: Any = None
    generator_enc_last_hidden_state: Any = None
    generator_enc_hidden_states: Any = None
    generator_enc_attentions: Any = None
    generator_dec_hidden_states: Any = None
    generator_dec_attentions: Any = None
    generator_cross_attentions: Any = None


@dataclass(eq=False, repr=True)
class RetrievAugGenerateOutput(RagOutput):
    """What `generate(..., output_provenance=True)` returns: the ids and, per output, the passages used.

    Attributes:
        sequences: `(B*R, S)` generated ids (R = num_return_sequences).
        doc_ids: `(B*R, N)` ids of the passages the output was generated from (-1: empty slot).
        doc_scores: `(B*R, N)` their question/passage scores.
        doc_titles: list (length B*R) of lists of N passage titles (`None` without a retriever).
        sequences_scores: `(B*R,)` final scores of the outputs where the decoding mode provides them.
        scores: per-step scores when `output_scores=True` (RAG-Token).
    """

    sequences: Any = None
    doc_ids: Any = None
    doc_scores: Any = None
    doc_titles: Optional[list] = None
    sequences_scores: Any = None
    scores: Any = None

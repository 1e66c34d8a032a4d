"""Output containers of the Keras sub-models (OrderedDict dataclasses, as `rag_core.outputs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rag_core.outputs import RagOutput


@dataclass
class EncoderOutput(RagOutput):
    """An encoder's outputs.

    last_hidden_state: `(B, L, H)`.
    pooler_output: `(B, H)` or `(B, P)` (question encoders only; None for generator encoders).
    hidden_states: tuple of `(B, L, H)`, the embeddings then every layer (with `output_hidden_states`).
    attentions: tuple of `(B, heads, L, L)`, one per layer (with `output_attentions`).
    """

    last_hidden_state: Any = None
    pooler_output: Optional[Any] = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class Seq2SeqLMOutput(RagOutput):
    """A seq2seq generator's outputs.

    logits: `(B, T, V)`.
    past_key_values: with `use_cache`, one tuple per decoder layer of `(self_k, self_v, cross_k,
        cross_v)`, each `(B, heads, length, head_dim)`.
    decoder_hidden_states / decoder_attentions / cross_attentions: per layer, with the output flags.
    encoder_last_hidden_state: `(B, L, H)`; encoder_hidden_states / encoder_attentions: per layer.
    """

    logits: Any = None
    past_key_values: Optional[tuple] = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Optional[Any] = None
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None


@dataclass
class DPREncoderOutput(RagOutput):
    """A DPR encoder's outputs, `pooler_output` first as in transformers' DPR outputs (so
    `question_encoder(input_ids)[0]` is the question vector).

    pooler_output: `(B, H)`, or `(B, P)` with `projection_dim > 0`.
    hidden_states / attentions: per layer, with the output flags.
    last_hidden_state: `(B, L, H)` of the BERT inside.
    """

    pooler_output: Any = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    last_hidden_state: Optional[Any] = None

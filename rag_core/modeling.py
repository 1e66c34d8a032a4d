"""The framework-neutral parts of the RAG model classes, used by rag_pt and rag_tf alike: the
model's `RagConfig` from the constructor's arguments, the `question_encoder_*` / `generator_*`
keyword arguments of `from_pretrained_question_encoder_generator`, and which pooling turns an
encoder's output into the question or passage vector.

    >>> kwargs = {"question_encoder_model": "q", "generator_config": "c", "n_docs": 5}
    >>> pop_prefixed(kwargs, "generator_"), kwargs
    ({'config': 'c'}, {'question_encoder_model': 'q', 'n_docs': 5})
"""

from __future__ import annotations

from typing import Any, Optional

from .configuration_rag import RagConfig
from .errors import RagInputError

# pooling name -> what it reads: the encoder's pooler output, its first token, or the masked mean
POOLING_KINDS = {"dpr": "pooler", "pooler": "pooler", "cls": "cls", "mean": "mean"}


def resolve_config(
    config: Any, question_encoder: Any, generator: Any, config_kwargs: Optional[dict] = None
) -> RagConfig:
    """The model's `RagConfig`: the one given, or one built from the two sub-models' configs
    (updated with `config_kwargs`). transformers' own RagConfig is converted, anything else refused."""
    if config is None:
        if question_encoder is None or generator is None:
            raise ValueError(
                "pass a `config` (RagConfig), or both a `question_encoder` and a `generator` model to build one from"
            )
        return RagConfig.from_question_encoder_generator_configs(
            question_encoder.config, generator.config, **(config_kwargs or {})
        )
    if not isinstance(config, RagConfig):
        # transformers' own RagConfig (same fields, same config.json): convert rather than refuse
        if getattr(config, "model_type", None) == "rag":
            return RagConfig(**config.to_dict())
        raise TypeError(f"config must be a RagConfig, got {type(config).__name__}")
    return config


def pop_prefixed(kwargs: dict, prefix: str) -> dict:
    """Pop the `prefix*` keys of `kwargs` (in place) and return them without the prefix."""
    return {key[len(prefix):]: kwargs.pop(key) for key in [k for k in kwargs if k.startswith(prefix)]}


def pooling_kind(pooling: str) -> str:
    """"pooler", "cls" or "mean" for a pooling name (see `RagConfig.question_encoder_pooling`)."""
    if pooling not in POOLING_KINDS:
        raise RagInputError(f"unknown question_encoder_pooling {pooling!r}; expected one of {sorted(POOLING_KINDS)}")
    return POOLING_KINDS[pooling]


def missing_pooler_error(pooling: str) -> RagInputError:
    return RagInputError(f"question_encoder_pooling={pooling!r} needs an encoder with a pooler output")


def context_encoder_pooling(config: RagConfig, ctx_encoder_model_type: Optional[str]) -> str:
    """The pooling of the passage vectors a context encoder trained end to end computes: DPR's own
    (its pooler output) for a DPR context encoder, else the question encoder's configured pooling,
    so passages and questions live in the same space."""
    return "dpr" if ctx_encoder_model_type == "dpr" else config.resolved_question_encoder_pooling

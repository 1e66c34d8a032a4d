"""rag_core.modeling: config resolution, prefixed keyword arguments and the pooling choice, which
rag_pt and rag_tf both call (no framework here)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rag_core import RagConfig, RagInputError
from rag_core.modeling import context_encoder_pooling, pooling_kind, pop_prefixed, resolve_config
from tests.harness.configs import tiny_bart_config, tiny_dpr_config, tiny_rag_config


def test_resolve_config_given_built_or_converted():
    config = tiny_rag_config()
    assert resolve_config(config, None, None) is config
    built = resolve_config(None, SimpleNamespace(config=tiny_dpr_config()), SimpleNamespace(config=tiny_bart_config()),
                           {"n_docs": 7})
    assert isinstance(built, RagConfig) and built.n_docs == 7
    assert built.question_encoder.model_type == "dpr" and built.generator.model_type == "bart"
    from transformers import RagConfig as TransformersRagConfig

    converted = resolve_config(TransformersRagConfig(**config.to_dict()), None, None)
    assert type(converted) is RagConfig and converted.to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="question_encoder.*generator"):
        resolve_config(None, SimpleNamespace(config=tiny_dpr_config()), None)
    with pytest.raises(TypeError, match="RagConfig, got BartConfig"):
        resolve_config(tiny_bart_config(), None, None)


def test_pop_prefixed_takes_only_its_prefix_in_place():
    kwargs = {"question_encoder_model": 1, "generator_config": 2, "generator_model": 3, "n_docs": 4}
    assert pop_prefixed(kwargs, "generator_") == {"config": 2, "model": 3}
    assert kwargs == {"question_encoder_model": 1, "n_docs": 4}
    assert pop_prefixed(kwargs, "generator_") == {}


def test_pooling_kinds_and_the_context_encoder_pooling():
    assert [pooling_kind(p) for p in ("dpr", "pooler", "cls", "mean")] == ["pooler", "pooler", "cls", "mean"]
    with pytest.raises(RagInputError, match="unknown question_encoder_pooling 'max'"):
        pooling_kind("max")
    bert = tiny_rag_config("bert", "bart")
    assert context_encoder_pooling(bert, "dpr") == "dpr"  # a DPR context encoder pools its own way
    assert context_encoder_pooling(bert, "bert") == bert.resolved_question_encoder_pooling == "cls"
    bert.question_encoder_pooling = "mean"
    assert context_encoder_pooling(bert, "bert") == "mean"
    assert context_encoder_pooling(tiny_rag_config("dpr", "bart"), "bert") == "dpr"

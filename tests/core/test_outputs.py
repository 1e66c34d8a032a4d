"""The shared output containers: attribute, key and index access, to_tuple, tf.nest-style rebuild."""

import dataclasses

import numpy as np
import pytest

from rag_core import RetrievAugGenerateOutput, RetrievAugLMMarginOutput, RetrievAugLMOutput


def test_access_styles_agree():
    logits, scores = np.ones((6, 2, 5)), np.zeros((2, 3))
    out = RetrievAugLMOutput(logits=logits, doc_scores=scores)
    assert out.logits is logits and out["logits"] is logits and out[0] is logits
    assert out[1] is scores and out.to_tuple() == (logits, scores)
    assert list(out.keys()) == ["logits", "doc_scores"]
    with pytest.raises(KeyError):
        out["loss"]


def test_setting_a_field_keeps_declaration_order():
    out = RetrievAugLMMarginOutput(logits=np.ones(2), doc_scores=np.zeros(2))
    out.loss = np.float32(3.0)
    assert out[0] == np.float32(3.0) and list(out.keys())[0] == "loss"
    out["loss"] = None
    assert "loss" not in out and out[0] is out.logits
    with pytest.raises(KeyError, match="nope"):
        out["nope"] = 1


def test_rebuild_from_pairs_like_tf_nest():
    out = RetrievAugLMMarginOutput(loss=np.float32(1.0), logits=np.ones(2))
    rebuilt = type(out)((k, out[k]) for k in out)
    assert list(rebuilt.keys()) == ["loss", "logits"]
    np.testing.assert_array_equal(rebuilt.logits, out.logits)


def test_every_field_is_documented_with_a_shape_or_meaning():
    for cls in (RetrievAugLMOutput, RetrievAugLMMarginOutput, RetrievAugGenerateOutput):
        doc = cls.__doc__
        for field in dataclasses.fields(cls):
            assert f"{field.name}" in doc, (cls.__name__, field.name)

"""Checkpoints: ours <-> transformers' RAG classes, safetensors and .bin, head mismatch warning."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from rag_pt import RagModel, RagSequenceForGeneration, RagTokenForGeneration
from tests.harness.configs import tiny_bart_config, tiny_dpr_config, tiny_rag_config
from tests.pt import support


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("head", ["model", "token", "sequence"])
def test_oracle_checkpoint_loads_into_ours_and_back(tmp_path, head):
    import transformers

    config = transformers.RagConfig(**tiny_rag_config("dpr", "bart").to_dict())
    torch.manual_seed(3)
    oracle = support.oracle_class(head)(config=config).eval()
    oracle.save_pretrained(tmp_path / "theirs")
    assert os.path.isfile(tmp_path / "theirs" / "model.safetensors")
    ours = support.ours_class(head).from_pretrained(tmp_path / "theirs").eval()
    _same_weights(ours, oracle)
    ours.save_pretrained(tmp_path / "ours")
    back = support.oracle_class(head).from_pretrained(tmp_path / "ours").eval()
    _same_weights(back, oracle)
    prefix = "" if head == "model" else "rag."
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(prefix + "question_encoder.") or k.startswith(prefix + "generator.") for k in keys)


def test_bin_checkpoint_is_read_with_weights_only(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = RagTokenForGeneration(tiny_rag_config("dpr", "t5")).eval()
    # a legacy checkpoint: transformers 5 only writes safetensors, so write the .bin as 4.x did (torch.save)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    assert not os.path.exists(tmp_path / "model.safetensors")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = RagTokenForGeneration.from_pretrained(tmp_path)
    assert calls and all(flag is True for flag in calls)
    _same_weights(loaded, model)
    with pytest.raises(ValueError, match="weights_only"):
        RagTokenForGeneration.from_pretrained(tmp_path, weights_only=False)


def test_token_checkpoint_into_sequence_warns(tmp_path):
    torch.manual_seed(0)
    RagTokenForGeneration(tiny_rag_config("dpr", "bart")).save_pretrained(tmp_path / "token")
    with pytest.warns(UserWarning, match="RagTokenForGeneration"):
        RagSequenceForGeneration.from_pretrained(tmp_path / "token")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        RagTokenForGeneration.from_pretrained(tmp_path / "token")
    with pytest.warns(UserWarning):
        RagSequenceForGeneration.from_pretrained(tmp_path / "token").save_pretrained(tmp_path / "seq")
    with pytest.warns(UserWarning, match="RagSequenceForGeneration"):
        RagTokenForGeneration.from_pretrained(tmp_path / "seq")


def test_base_model_checkpoint_loads_into_head(tmp_path):
    torch.manual_seed(0)
    base = RagModel(tiny_rag_config("dpr", "bart")).eval()
    base.save_pretrained(tmp_path)
    head = RagSequenceForGeneration.from_pretrained(tmp_path)
    _same_weights(head.rag, base)


def test_from_pretrained_question_encoder_generator(tmp_path, generator_tokenizers):
    from transformers import BartForConditionalGeneration, DPRQuestionEncoder

    torch.manual_seed(0)
    DPRQuestionEncoder(tiny_dpr_config()).save_pretrained(tmp_path / "qe")
    BartForConditionalGeneration(tiny_bart_config()).save_pretrained(tmp_path / "gen")
    model = RagTokenForGeneration.from_pretrained_question_encoder_generator(
        str(tmp_path / "qe"), str(tmp_path / "gen"), n_docs=2, retrieval_vector_size=16
    )
    assert model.config.n_docs == 2 and model.config.generator.model_type == "bart"
    reference = BartForConditionalGeneration.from_pretrained(tmp_path / "gen")
    torch.testing.assert_close(model.generator.lm_head.weight, reference.lm_head.weight)
    ctx = support.make_contexts(generator_tokenizers["bart"], 1, 2)
    out = model(**ctx, labels=torch.tensor([[2, 0, 5, 2]]))
    assert torch.isfinite(out.loss).all()
    # save, reload: the same model
    model.save_pretrained(tmp_path / "rag")
    again = RagTokenForGeneration.from_pretrained(tmp_path / "rag")
    np.testing.assert_allclose(again(**ctx, labels=torch.tensor([[2, 0, 5, 2]])).loss.detach().numpy(),
                               out.loss.detach().numpy(), rtol=1e-6)

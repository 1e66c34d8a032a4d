"""Loading that cannot succeed says why: an architecture rag_tf does not implement, a weight of the
wrong shape (named, both shapes), a folder that is not a RAG checkpoint; nothing half-loaded is
returned. And the package stands on Keras 3 alone: no tf-keras, no transformers TF class."""

import pathlib
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rag_tf.models.registry import UnsupportedModelError
from rag_tf.models.weights import SubModelWeightError
from tests.harness.configs import tiny_dpr_config
from tests.tf import support

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_an_unsupported_generator_names_its_model_type_and_the_supported_ones(tmp_path):
    from transformers import PegasusConfig

    from rag_core import RagConfig

    config = RagConfig.from_question_encoder_generator_configs(
        tiny_dpr_config(), PegasusConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1))
    with pytest.raises(UnsupportedModelError, match=r"model_type 'pegasus'.*\['bart', 't5'\]"):
        support.ours_class("token")(config)
    config.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="pegasus"):
        support.ours_class("token").from_pretrained(tmp_path)


def test_a_wrong_shaped_weight_is_named_with_both_shapes_and_nothing_is_returned(token_pair, tmp_path):
    model = token_pair[0]
    model.save_pretrained(tmp_path / "good")
    weights = load_file(tmp_path / "good" / "model.safetensors")
    name = "rag.generator.model.encoder.layers.0.fc1.weight"
    weights[name] = np.zeros((weights[name].shape[0] + 1, weights[name].shape[1]), np.float32)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_bytes((tmp_path / "good" / "config.json").read_bytes())
    save_file(weights, str(tmp_path / "bad" / "model.safetensors"))
    with pytest.raises(SubModelWeightError, match=re.escape(name) + r".*\(33, 16\).*\(32, 16\)"):
        support.ours_class("token").from_pretrained(tmp_path / "bad")
    # a checked model is never changed half-way: the failing load leaves the live one as it was
    before = model.pt_weights()
    with pytest.raises(SubModelWeightError):
        model.load_pt_weights(weights, source="bad")
    after = model.pt_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_folder_that_is_not_a_rag_checkpoint_says_what_it_holds(tmp_path):
    from transformers import BartConfig

    BartConfig(d_model=16).save_pretrained(tmp_path / "bart")
    with pytest.raises(ValueError, match=r"'bart' model; a RAG checkpoint has model_type 'rag'"):
        support.ours_class("token").from_pretrained(tmp_path / "bart")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="has no config.json"):
        support.ours_class("token").from_pretrained(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        support.ours_class("token").from_pretrained(tmp_path / "file")


def test_rag_tf_source_uses_no_tf_keras_and_no_transformers_tensorflow_class():
    forbidden = re.compile(r"tf_keras|TF_USE_LEGACY_KERAS|modeling_tf_|from transformers import .*\bTF[A-Z]|"
                           r"transformers\.TF[A-Z]|generation\.tf_utils")
    offenders = [f"{path.relative_to(ROOT)}:{number}" for path in sorted((ROOT / "rag_tf").rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if forbidden.search(line)]
    assert not offenders, offenders

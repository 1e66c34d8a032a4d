"""Unusable files raise a library exception that names the file, what was expected and what was
found: truncated or corrupt safetensors and h5, broken JSON, shard indexes that list a missing shard,
a folder of another model or an empty folder given to a RAG `from_pretrained`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from rag_core import CheckpointError, CheckpointNotFoundError, RagConfig, RagRetriever, RagTokenizer
from rag_core import storage
from tests.harness.configs import tiny_bart_config, tiny_rag_config
from tests.harness.files import truncate


@pytest.fixture
def bart_folder(tmp_path):
    tiny_bart_config().save_pretrained(tmp_path / "bart")
    return tmp_path / "bart"


def test_config_of_another_model_empty_folder_and_broken_json_are_named(tmp_path, bart_folder):
    for load in (RagConfig.from_pretrained, RagTokenizer.from_pretrained, RagRetriever.from_pretrained):
        with pytest.raises(CheckpointError, match=f"{bart_folder / 'config.json'} describes a 'bart' model; a RAG "
                                                  "checkpoint has model_type 'rag'.*from_pretrained_question_encoder_generator"):
            load(bart_folder)
    (tmp_path / "empty").mkdir()
    for load in (RagConfig.from_pretrained, RagRetriever.from_pretrained):
        with pytest.raises(CheckpointNotFoundError, match=f"{tmp_path / 'empty'} has no config.json.*found an empty folder"):
            load(tmp_path / "empty")
    with pytest.raises(CheckpointNotFoundError, match=f"{tmp_path / 'empty'}.*has no question_encoder_tokenizer/.*empty folder"):
        RagTokenizer.from_pretrained(tmp_path / "empty")
    tiny_rag_config().save_pretrained(tmp_path / "rag")
    truncate(tmp_path / "rag" / "config.json")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'rag' / 'config.json'} is not valid JSON.*expected a RAG config.json"):
        RagConfig.from_pretrained(tmp_path / "rag")
    (tmp_path / "rag" / "config.json").write_text(json.dumps({"model_type": "rag", "question_encoder": {"model_type": "dpr"}}))
    with pytest.raises(CheckpointError, match="model_type 'rag' but no generator sub-configuration"):
        RagConfig.from_pretrained(tmp_path / "rag")
    (tmp_path / "rag" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="holds a JSON list; expected a JSON object"):
        storage.check_rag_config(tmp_path / "rag")


def test_truncated_and_corrupt_safetensors_are_named_with_sizes(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": np.zeros((64, 8), np.float32), "b": np.ones(5, np.float32)}, str(path))
    storage.check_safetensors(path)  # a whole file passes
    size = os.path.getsize(path)
    truncate(path, 0.9)
    with pytest.raises(CheckpointError, match=rf"{path} is {int(size * 0.9)} bytes; its header describes 2 tensors that need {size} bytes: truncated"):
        storage.check_safetensors(path)
    truncate(path, 0.01)
    with pytest.raises(CheckpointError, match="header says the header alone is"):
        storage.check_safetensors(path)
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match=f"{path} is 3 bytes; a safetensors file starts with an 8-byte header"):
        storage.check_safetensors(path)
    path.write_bytes((6).to_bytes(8, "little") + b"{oops}")
    with pytest.raises(CheckpointError, match=f"{path}: the safetensors header is not valid"):
        storage.check_safetensors(path)


def test_a_shard_index_that_lists_a_missing_shard_or_is_broken_is_named(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    save_file({"a": np.zeros(3, np.float32)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    index.write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(CheckpointNotFoundError, match=rf"{index} lists 2 shard files, of which 1 are missing.*model-00002-of-00002"):
        storage.read_weight_index(index)
    with pytest.raises(CheckpointNotFoundError, match="model-00002-of-00002"):
        storage.check_weight_files(tmp_path)
    index.write_text('{"weight_map": {"a": "model-00001')
    with pytest.raises(CheckpointError, match=f"{index} is not valid JSON"):
        storage.read_weight_index(index)
    index.write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match=f'{index} has no "weight_map" object'):
        storage.read_weight_index(index)


def _checkpoint(folder):
    from rag_core import weight_conversion as wc
    from rag_core.convert import write_pt_weights

    config = tiny_rag_config()
    config.architectures = ["RagTokenForGeneration"]
    entries = wc.rag_entries(config.question_encoder, config.generator, "RagTokenForGeneration")
    rng = np.random.default_rng(0)
    config.save_pretrained(folder)
    write_pt_weights(folder, {e.pt: rng.standard_normal(e.pt_shape).astype(np.float32) for e in entries if e.transform != wc.ALIAS})


def test_the_converter_names_a_truncated_safetensors_or_h5(tmp_path):
    from rag_core.convert import convert_checkpoint, main

    _checkpoint(tmp_path / "pt")
    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    truncate(tmp_path / "pt" / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'pt' / 'model.safetensors'} is .* bytes.*truncated"):
        convert_checkpoint(tmp_path / "pt", tmp_path / "out", to="tf")
    truncate(tmp_path / "tf" / "tf_model.h5")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'tf' / 'tf_model.h5'} .* is not a readable HDF5 file"):
        convert_checkpoint(tmp_path / "tf", tmp_path / "out", to="pt")
    assert main(["--to", "pt", str(tmp_path / "tf"), str(tmp_path / "out")]) == 1  # a message, not a traceback
    assert not (tmp_path / "out").exists()


def test_an_hdf5_file_that_is_not_keras_weights_is_named(tmp_path):
    import h5py

    from rag_core.convert import convert_checkpoint

    _checkpoint(tmp_path / "pt")
    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    with h5py.File(tmp_path / "tf" / "tf_model.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'tf' / 'tf_model.h5'} has no 'layer_names' attribute.*found top-level entries \\['x'\\]"):
        convert_checkpoint(tmp_path / "tf", tmp_path / "out", to="pt")

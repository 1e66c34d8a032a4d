"""`from_pretrained` of the PyTorch models on unusable folders names the file at fault: a truncated
or corrupt `model.safetensors`, a shard index listing a missing shard, a plain BART folder, an
empty folder, a truncated `tf_model.h5` with `from_tf=True`."""

from __future__ import annotations

import os

import pytest
import torch

from rag_core import CheckpointError, CheckpointNotFoundError
from rag_pt import RagSequenceForGeneration, RagTokenForGeneration
from tests.harness.configs import tiny_bart_config, tiny_dpr_config, tiny_rag_config
from tests.harness.files import truncate


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A RAG-Token checkpoint, one file and sharded."""
    folder = tmp_path_factory.mktemp("bad_files")
    torch.manual_seed(0)
    model = RagTokenForGeneration(tiny_rag_config("dpr", "bart"))
    model.save_pretrained(folder / "single")
    model.save_pretrained(folder / "sharded", max_shard_size="600KB")
    return folder


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_truncated_or_corrupt_safetensors_is_named(saved, tmp_path):
    folder = _copy(saved / "single", tmp_path / "ck")
    truncate(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{folder / 'model.safetensors'} is .* bytes; its header .* truncated"):
        RagTokenForGeneration.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match=f"{folder / 'model.safetensors'}.*header"):
        RagSequenceForGeneration.from_pretrained(folder)


def test_a_shard_index_listing_a_missing_shard_is_named(saved, tmp_path):
    folder = _copy(saved / "sharded", tmp_path / "ck")
    shard = sorted(n for n in os.listdir(folder) if n.startswith("model-"))[-1]
    os.remove(folder / shard)
    with pytest.raises(CheckpointNotFoundError, match=f"{folder / 'model.safetensors.index.json'} lists .* missing .*{shard}"):
        RagTokenForGeneration.from_pretrained(folder)


def test_a_plain_bart_folder_or_an_empty_folder_says_what_it_holds(tmp_path):
    from transformers import BartForConditionalGeneration, DPRQuestionEncoder

    torch.manual_seed(0)
    BartForConditionalGeneration(tiny_bart_config()).save_pretrained(tmp_path / "bart")
    with pytest.raises(CheckpointError, match=r"config.json describes a 'bart' model; a RAG checkpoint has model_type "
                                              r"'rag'.*from_pretrained_question_encoder_generator"):
        RagTokenForGeneration.from_pretrained(tmp_path / "bart")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match=f"{tmp_path / 'empty'} has no config.json.*found an empty folder"):
        RagTokenForGeneration.from_pretrained(tmp_path / "empty")
    # the sub-model folders of from_pretrained_question_encoder_generator are checked too
    DPRQuestionEncoder(tiny_dpr_config()).save_pretrained(tmp_path / "qe")
    truncate(tmp_path / "bart" / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'bart' / 'model.safetensors'} is .* truncated"):
        RagTokenForGeneration.from_pretrained_question_encoder_generator(str(tmp_path / "qe"), str(tmp_path / "bart"))


def test_from_tf_names_a_truncated_h5(saved, tmp_path):
    from rag_core.convert import convert_checkpoint

    convert_checkpoint(saved / "single", tmp_path / "tf", to="tf")
    truncate(tmp_path / "tf" / "tf_model.h5")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'tf' / 'tf_model.h5'} .* is not a readable HDF5 file"):
        RagTokenForGeneration.from_pretrained(tmp_path / "tf", from_tf=True)

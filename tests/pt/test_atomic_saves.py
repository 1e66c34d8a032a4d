"""`RagPreTrainedModel.save_pretrained` is atomic: a failure half-way through writing the weights
leaves the previous checkpoint byte-identical, a save into a shared folder keeps the other files,
stale shards of an older save are removed, and a save onto a file raises instead of doing nothing."""

from __future__ import annotations

import os

import pytest
import torch

from rag_core import NotAFolderError, RagTokenizer
from rag_pt import RagTokenForGeneration
from tests.harness.configs import tiny_rag_config
from tests.harness.files import leftovers, snapshot, write_half_then_fail


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RagTokenForGeneration(tiny_rag_config("dpr", "bart")).eval()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_a_save_that_fails_half_way_leaves_the_checkpoint_byte_identical(tmp_path, monkeypatch, model):
    import safetensors.torch
    import transformers.modeling_utils

    model.save_pretrained(tmp_path / "ck")
    before = snapshot(tmp_path / "ck")

    def save_file(tensors, filename, metadata=None):
        write_half_then_fail(filename, safetensors.torch.save(tensors, metadata=metadata))

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)
    with torch.no_grad():
        model.rag.generator.final_logits_bias.add_(1.0)  # the second save would write other weights
    try:
        with pytest.raises(OSError, match="No space left on device"):
            model.save_pretrained(tmp_path / "ck")
    finally:
        with torch.no_grad():
            model.rag.generator.final_logits_bias.sub_(1.0)
    assert snapshot(tmp_path / "ck") == before and leftovers(tmp_path / "ck") == []
    _same_weights(RagTokenForGeneration.from_pretrained(tmp_path / "ck"), model)


def test_saves_into_one_folder_keep_each_others_files(tmp_path, model, question_encoder_tokenizer, bart_tokenizer, tiny_retriever_bart):
    folder = tmp_path / "ck"
    tiny_retriever_bart.save_pretrained(folder)  # config.json and both tokenizer folders
    (folder / "README.md").write_text("my notes")
    model.save_pretrained(folder)  # its own config.json replaces the retriever's
    RagTokenizer(question_encoder_tokenizer, bart_tokenizer).save_pretrained(folder)
    names = set(snapshot(folder))
    assert {"README.md", "model.safetensors", "generation_config.json", "question_encoder_tokenizer/tokenizer.json",
            "generator_tokenizer/tokenizer.json"} <= names
    assert (folder / "README.md").read_text() == "my notes"
    _same_weights(RagTokenForGeneration.from_pretrained(folder), model)
    assert RagTokenizer.from_pretrained(folder).generator("Paris")["input_ids"] == bart_tokenizer("Paris")["input_ids"]


def test_stale_weights_are_removed_shards_and_other_formats(tmp_path, model):
    folder = tmp_path / "ck"
    model.save_pretrained(folder, max_shard_size="600KB")
    shards = sorted(n for n in os.listdir(folder) if n.startswith("model-"))
    assert len(shards) >= 2 and (folder / "model.safetensors.index.json").is_file()
    (folder / "tf_model.h5").write_bytes(b"older weights in another format")
    (folder / "notes.txt").write_text("kept")
    model.save_pretrained(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", "model.safetensors", "notes.txt"]
    _same_weights(RagTokenForGeneration.from_pretrained(folder), model)
    model.save_pretrained(folder, max_shard_size="600KB")  # and back: the single file goes
    assert "model.safetensors" not in os.listdir(folder)
    assert sorted(n for n in os.listdir(folder) if n.startswith("model-")) == shards
    _same_weights(RagTokenForGeneration.from_pretrained(folder), model)
    assert leftovers(folder) == []


def test_a_save_onto_a_file_raises_and_a_new_folder_respects_the_umask(tmp_path, model):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(NotAFolderError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        model.save_pretrained(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"
    previous = os.umask(0o022)
    try:
        model.save_pretrained(tmp_path / "new")
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "new").st_mode & 0o777 == 0o755
    assert sorted(os.listdir(tmp_path)) == ["file", "new"]

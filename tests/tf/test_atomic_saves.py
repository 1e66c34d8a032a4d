"""`TFRagPreTrainedModel.save_pretrained` is atomic in both formats: a failure half-way through
writing `model.safetensors` or `tf_model.h5` leaves the previous checkpoint byte-identical, a save
into a shared folder keeps the other files and removes the older weights, a save onto a file raises."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rag_core import NotAFolderError
from tests.harness.files import disk_full, leftovers, snapshot, write_half_then_fail
from tests.tf import support


def test_a_safetensors_save_that_fails_half_way_leaves_the_checkpoint_byte_identical(tmp_path, monkeypatch, token_pair):
    import safetensors.numpy

    model = token_pair[0]
    model.save_pretrained(tmp_path / "ck")
    before = snapshot(tmp_path / "ck")
    monkeypatch.setattr(safetensors.numpy, "save_file", lambda tensors, filename, metadata=None: write_half_then_fail(
        filename, safetensors.numpy.save(tensors, metadata=metadata)))
    with pytest.raises(OSError, match="No space left on device"):
        model.save_pretrained(tmp_path / "ck")
    assert snapshot(tmp_path / "ck") == before and leftovers(tmp_path / "ck") == []


def test_an_h5_save_that_fails_half_way_leaves_the_checkpoint_byte_identical(tmp_path, monkeypatch, token_pair):
    import rag_core.convert as convert

    model = token_pair[0]
    model.save_pretrained(tmp_path / "ck", save_format="h5")
    before = snapshot(tmp_path / "ck")
    real, calls = convert._write_h5_attribute, []

    def write_attribute(group, name, values):  # h5py fails with part of the file written
        real(group, name, values)
        calls.append(name)
        if len(calls) == 3:
            raise disk_full()

    monkeypatch.setattr(convert, "_write_h5_attribute", write_attribute)
    with pytest.raises(OSError, match="No space left on device"):
        model.save_pretrained(tmp_path / "ck", save_format="h5")
    assert len(calls) == 3 and snapshot(tmp_path / "ck") == before and leftovers(tmp_path / "ck") == []


def test_saves_into_one_folder_keep_other_files_and_one_version_of_the_weights(tmp_path, token_pair):
    model = token_pair[0]
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "notes.txt").write_text("kept")
    (folder / "generator_tokenizer").mkdir()
    (folder / "generator_tokenizer" / "vocab.json").write_text("{}")
    model.save_pretrained(folder)
    model.save_pretrained(folder, save_format="h5")  # the older model.safetensors would be read first: removed
    assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", "generator_tokenizer", "notes.txt",
                                          "tf_model.h5"]
    loaded = support.ours_class("token").from_pretrained(folder)
    expected, found = model.pt_weights(), loaded.pt_weights()
    assert sorted(expected) == sorted(found)
    for name in expected:
        np.testing.assert_allclose(found[name], expected[name], rtol=0, atol=0, err_msg=name)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(NotAFolderError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        model.save_pretrained(tmp_path / "file", save_format="h5")
    assert (tmp_path / "file").read_text() == "mine" and leftovers(folder) == []

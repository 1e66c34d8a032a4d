"""Atomic saves of the framework-neutral writers: `rag_core.storage` itself, `RagConfig`,
`RagTokenizer`, `RagRetriever`, the checkpoint converter and the index builder.

Each writer saves once, then saves again with a failure in the middle of a write (half a file
written, then "No space left on device"): the error surfaces, the folder is byte-identical and no
temporary sibling is left. Saves into a shared folder keep the other files; a save onto a file raises.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from rag_core import NotAFolderError, RagConfig, RagTokenizer
from rag_core import storage
from tests.harness.configs import tiny_rag_config
from tests.harness.files import disk_full, leftovers, snapshot, write_half_then_fail


def _write(folder, files: dict) -> None:
    for name, text in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# === rag_core.storage ===
def test_a_save_replaces_its_own_files_keeps_the_others_and_removes_stale_weights(tmp_path):
    target = tmp_path / "ck"
    _write(target, {"config.json": "old", "model-00001-of-00002.safetensors": "a", "model-00002-of-00002.safetensors": "b",
                    "model.safetensors.index.json": "{}", "pytorch_model.bin": "pickle", "model.fp16.safetensors": "half",
                    "training_args.bin": "args", "notes.txt": "mine", "generator_tokenizer/vocab.json": "v1"})
    with storage.atomic_save(target) as staging:
        _write(staging, {"config.json": "new", "model.safetensors": "w"})
    assert snapshot(target) == snapshot_of({"config.json": "new", "model.safetensors": "w", "model.fp16.safetensors": "half",
                                            "training_args.bin": "args", "notes.txt": "mine",
                                            "generator_tokenizer/vocab.json": "v1"}, tmp_path)
    # and the reverse: a sharded save (or one in another format) removes the single file
    with storage.atomic_save(target) as staging:
        _write(staging, {"tf_model.h5": "c"})
    assert "model.safetensors" not in os.listdir(target) and "model.fp16.safetensors" in os.listdir(target)
    assert leftovers(target) == []


def snapshot_of(files: dict, tmp_path) -> dict:
    reference = tmp_path / "reference"
    _write(reference, files)
    return snapshot(reference)


def test_a_failure_while_moving_into_place_is_rolled_back(tmp_path, monkeypatch):
    target = tmp_path / "ck"
    _write(target, {"config.json": "old", "model.safetensors": "old weights", "sub/a.txt": "old a", "notes.txt": "x"})
    before = snapshot(target)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(os.path.basename(dst))
        if calls.count("config.json") == 1 and calls[-1] == "config.json":
            raise disk_full()  # the last move (once): weights and folder are already in place
        return real_replace(src, dst)

    with pytest.raises(OSError, match="No space left on device"):
        with storage.atomic_save(target) as staging:
            _write(staging, {"config.json": "new", "model.safetensors": "new weights", "sub/b.txt": "new b",
                             "extra.json": "{}"})
            monkeypatch.setattr(os, "replace", replace)
    monkeypatch.undo()
    assert "model.safetensors" in calls and "sub" in calls  # they were moved, then moved back
    assert snapshot(target) == before
    assert leftovers(target) == []


def test_a_failure_inside_the_write_leaves_the_folder_and_no_sibling(tmp_path):
    target = tmp_path / "ck"
    _write(target, {"config.json": "old", "model.safetensors": "old"})
    before = snapshot(target)
    with pytest.raises(OSError, match="No space left on device"):
        with storage.atomic_save(target) as staging:
            _write(staging, {"config.json": "new"})
            write_half_then_fail(os.path.join(staging, "model.safetensors"), b"new weights" * 10)
    assert snapshot(target) == before and leftovers(target) == []
    # a new folder that fails is not created at all
    with pytest.raises(OSError, match="No space left on device"):
        with storage.atomic_save(tmp_path / "new"):
            raise disk_full()
    assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_created_folders_and_files_respect_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        with storage.atomic_save(tmp_path / "saved") as staging:
            _write(staging, {"config.json": "{}"})
        with storage.atomic_directory(tmp_path / "built") as staging:
            _write(staging, {"manifest.json": "{}"})
        with storage.atomic_file(tmp_path / "index.faiss") as tmp:
            _write(os.path.dirname(tmp), {os.path.basename(tmp): "x"})
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "saved") == 0o750 and _mode(tmp_path / "built") == 0o750
    assert _mode(tmp_path / "index.faiss") == 0o640


def test_a_file_where_a_folder_is_expected_is_named(tmp_path):
    (tmp_path / "file").write_text("mine")
    for write in (lambda: storage.atomic_save(tmp_path / "file").__enter__(),
                  lambda: storage.atomic_directory(tmp_path / "file", overwrite=True).__enter__()):
        with pytest.raises(NotAFolderError, match=f"{tmp_path / 'file'} is a file, not a folder"):
            write()
    assert (tmp_path / "file").read_text() == "mine" and leftovers(tmp_path / "file") == []


# === RagConfig, RagTokenizer, RagRetriever ===
def _fail_half_way_through_json(monkeypatch):
    real = RagConfig.to_json_file

    def to_json_file(self, path, use_diff=True):
        real(self, path, use_diff=use_diff)
        with open(path, "rb") as f:
            write_half_then_fail(path, f.read())

    monkeypatch.setattr(RagConfig, "to_json_file", to_json_file)


def test_config_save_is_atomic(tmp_path, monkeypatch):
    config = tiny_rag_config(n_docs=3)
    config.save_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / "notes.txt").write_text("kept")
    before = snapshot(tmp_path / "ck")
    config.n_docs = 4
    _fail_half_way_through_json(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        config.save_pretrained(tmp_path / "ck")
    assert snapshot(tmp_path / "ck") == before and leftovers(tmp_path / "ck") == []
    monkeypatch.undo()
    config.save_pretrained(tmp_path / "ck")
    assert RagConfig.from_pretrained(tmp_path / "ck").n_docs == 4 and (tmp_path / "ck" / "notes.txt").exists()
    with pytest.raises(NotAFolderError, match="notes.txt is a file"):
        config.save_pretrained(tmp_path / "ck" / "notes.txt")


def _fail_half_way_through_a_tokenizer(monkeypatch, tokenizer):
    real = tokenizer.save_pretrained

    def save_pretrained(folder, *args, **kwargs):
        files = real(folder, *args, **kwargs)
        path = os.path.join(folder, "tokenizer.json")
        with open(path, "rb") as f:
            write_half_then_fail(path, f.read())
        return files

    monkeypatch.setattr(tokenizer, "save_pretrained", save_pretrained)


def test_tokenizer_save_is_atomic_and_keeps_other_files(tmp_path, monkeypatch, question_encoder_tokenizer, bart_tokenizer, t5_tokenizer):
    folder = tmp_path / "ck"
    tiny_rag_config().save_pretrained(folder)  # a model's files, saved first into the same folder
    RagTokenizer(question_encoder_tokenizer, bart_tokenizer).save_pretrained(folder)
    before = snapshot(folder)
    assert "config.json" in before and "generator_tokenizer/tokenizer.json" in before
    _fail_half_way_through_a_tokenizer(monkeypatch, t5_tokenizer)
    with pytest.raises(OSError, match="No space left on device"):
        RagTokenizer(question_encoder_tokenizer, t5_tokenizer).save_pretrained(folder)
    assert snapshot(folder) == before and leftovers(folder) == []
    monkeypatch.undo()
    RagTokenizer(question_encoder_tokenizer, t5_tokenizer).save_pretrained(folder)
    after = snapshot(folder)
    assert after["config.json"] == before["config.json"]  # the model's file is kept
    assert after["generator_tokenizer/tokenizer.json"] != before["generator_tokenizer/tokenizer.json"]
    assert "generator_tokenizer/merges.txt" not in after  # the BPE files of the old tokenizer went with it
    loaded = RagTokenizer.from_pretrained(folder)
    assert loaded.generator("hello world")["input_ids"] == t5_tokenizer("hello world")["input_ids"]
    with pytest.raises(NotAFolderError, match="config.json is a file"):
        RagTokenizer(question_encoder_tokenizer, t5_tokenizer).save_pretrained(folder / "config.json")


def test_retriever_save_is_atomic_and_keeps_other_files(tmp_path, monkeypatch, tiny_retriever_bart, bart_tokenizer):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights saved by a model")
    tiny_retriever_bart.save_pretrained(folder)
    before = snapshot(folder)
    _fail_half_way_through_a_tokenizer(monkeypatch, bart_tokenizer)
    with pytest.raises(OSError, match="No space left on device"):
        tiny_retriever_bart.save_pretrained(folder)
    assert snapshot(folder) == before and leftovers(folder) == []
    assert (folder / "model.safetensors").read_bytes() == b"weights saved by a model"
    with pytest.raises(NotAFolderError, match="model.safetensors is a file"):
        tiny_retriever_bart.save_pretrained(folder / "model.safetensors")


# === Converter and index builder (folders of their own: replaced whole, only with overwrite) ===
def _pt_checkpoint(folder):
    from rag_core import weight_conversion as wc
    from rag_core.convert import write_pt_weights

    config = tiny_rag_config()
    config.architectures = ["RagTokenForGeneration"]
    entries = wc.rag_entries(config.question_encoder, config.generator, "RagTokenForGeneration")
    rng = np.random.default_rng(0)
    config.save_pretrained(folder)
    write_pt_weights(folder, {e.pt: rng.standard_normal(e.pt_shape).astype(np.float32)
                              for e in entries if e.transform != wc.ALIAS})


def test_converter_overwrite_that_fails_half_way_keeps_the_old_output(tmp_path, monkeypatch):
    import safetensors.numpy

    import rag_core.convert as convert

    _pt_checkpoint(tmp_path / "pt")
    convert.convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    convert.convert_checkpoint(tmp_path / "tf", tmp_path / "back", to="pt")
    tf_before, pt_before = snapshot(tmp_path / "tf"), snapshot(tmp_path / "back")
    real, calls = convert._write_h5_attribute, []

    def write_attribute(group, name, values):  # h5py fails after part of the file is written
        real(group, name, values)
        calls.append(name)
        if len(calls) == 3:
            raise disk_full()

    monkeypatch.setattr(convert, "_write_h5_attribute", write_attribute)
    with pytest.raises(OSError, match="No space left on device"):
        convert.convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf", overwrite=True)
    monkeypatch.setattr(safetensors.numpy, "save_file",
                        lambda tensors, path, metadata=None: write_half_then_fail(path, safetensors.numpy.save(tensors)))
    with pytest.raises(OSError, match="No space left on device"):
        convert.convert_checkpoint(tmp_path / "tf", tmp_path / "back", to="pt", overwrite=True)
    assert snapshot(tmp_path / "tf") == tf_before and snapshot(tmp_path / "back") == pt_before
    assert sorted(os.listdir(tmp_path)) == ["back", "pt", "tf"]


def test_index_build_overwrite_that_fails_half_way_keeps_the_old_index(tmp_path, monkeypatch):
    import faiss

    from rag_core.build_index import build_index
    from tests.harness.passages import PASSAGES

    vectors = np.random.default_rng(0).standard_normal((len(PASSAGES), 8)).astype(np.float32)
    out = build_index(PASSAGES, tmp_path / "kb", embeddings=vectors, split=False, progress=False)
    before = snapshot(out)
    real = faiss.write_index

    def write_index(index, path):
        real(index, path)
        with open(path, "rb") as f:
            write_half_then_fail(path, f.read())

    monkeypatch.setattr(faiss, "write_index", write_index)
    with pytest.raises(OSError, match="No space left on device"):
        build_index(PASSAGES[:4], out, embeddings=vectors[:4], split=False, progress=False, overwrite=True)
    assert snapshot(out) == before and sorted(os.listdir(tmp_path)) == ["kb"]

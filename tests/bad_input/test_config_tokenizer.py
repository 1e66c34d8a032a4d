"""RagConfig and RagTokenizer: bad values and arguments are refused with an error naming the field or
argument (tests/core/test_config.py and tests/core/test_tokenizer.py hold the cases not repeated here)."""

from __future__ import annotations

import pytest

from rag_core import RagConfig, RagTokenizer
from rag_core.errors import RagConfigError, TokenizerInputError
from tests.bad_input.support import tree_digest
from tests.harness.configs import tiny_bart_config, tiny_dpr_config, tiny_rag_config

# (id, RagConfig keyword arguments, pattern naming the field)
CONFIG_VALUES = [
    ("n_docs-bool", {"n_docs": True}, r"RagConfig\.n_docs must be an integer >= 1, got True"),
    ("n_docs-str", {"n_docs": "5"}, r"RagConfig\.n_docs must be an integer >= 1, got '5'"),
    ("retrieval_vector_size-0", {"retrieval_vector_size": 0}, r"RagConfig\.retrieval_vector_size must be an integer >= 1"),
    ("max_combined_length-float", {"max_combined_length": 300.0}, r"RagConfig\.max_combined_length must be an integer"),
    ("ivf_nprobe-negative", {"ivf_nprobe": -1}, r"RagConfig\.ivf_nprobe must be an integer >= 1, got -1"),
    ("vocab_size-negative", {"vocab_size": -1}, r"RagConfig\.vocab_size must be an integer >= 0"),
    ("pad_token_id-negative", {"pad_token_id": -2}, r"RagConfig\.pad_token_id must be an integer >= 0, got -2"),
    ("forced_eos_token_id-negative", {"forced_eos_token_id": -1}, r"RagConfig\.forced_eos_token_id must be an integer"),
    ("title_sep-None", {"title_sep": None}, r"RagConfig\.title_sep must be a string, got NoneType"),
    ("doc_sep-None", {"doc_sep": None}, r"RagConfig\.doc_sep must be a string, got NoneType"),
    ("dataset_revision-int", {"dataset_revision": 3}, r"RagConfig\.dataset_revision must be a string, got int"),
    ("passages_path-int", {"passages_path": 123}, r"RagConfig\.passages_path must be a string, got int"),
    ("label_smoothing-str", {"label_smoothing": "0.1"}, r"RagConfig\.label_smoothing must be a number in \[0, 1\)"),
    ("label_smoothing-negative", {"label_smoothing": -0.1}, r"RagConfig\.label_smoothing must be a number in \[0, 1\)"),
    ("use_cache-None", {"use_cache": None}, r"RagConfig\.use_cache must be True or False, got None"),
    ("output_retrieved-int", {"output_retrieved": 1}, r"RagConfig\.output_retrieved must be True or False, got 1"),
    ("index_name-None", {"index_name": None}, r"RagConfig\.index_name must be one of"),
]


@pytest.mark.parametrize("kwargs, match", [pytest.param(k, m, id=i) for i, k, m in CONFIG_VALUES])
def test_invalid_config_value_names_the_field(kwargs, match):
    with pytest.raises(RagConfigError, match=match):
        tiny_rag_config(**kwargs)


@pytest.mark.parametrize(
    "build, match",
    [
        pytest.param(lambda: RagConfig(question_encoder="dpr", generator=tiny_bart_config().to_dict()),
                     r"RagConfig\.question_encoder must be a PretrainedConfig or a dict, got str", id="question_encoder-str"),
        pytest.param(lambda: RagConfig(question_encoder=tiny_dpr_config().to_dict(), generator={"model_type": "no-such-model"}),
                     r"RagConfig\.generator: unknown model_type 'no-such-model'", id="generator-unknown-model_type"),
        pytest.param(lambda: RagConfig.from_question_encoder_generator_configs(None, tiny_bart_config()),
                     r"question_encoder_config must be a transformers PretrainedConfig .*got NoneType",
                     id="from_configs-question_encoder-None"),
        pytest.param(lambda: RagConfig.from_question_encoder_generator_configs(tiny_dpr_config(), {"model_type": "bart"}),
                     r"generator_config must be a transformers PretrainedConfig .*got dict", id="from_configs-generator-dict"),
    ],
)
def test_invalid_sub_configuration_is_named(build, match):
    with pytest.raises(RagConfigError, match=match):
        build()


def test_a_saved_config_with_a_bad_value_is_named_and_left_as_it_is(tmp_path):
    import json

    tiny_rag_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["n_docs"] = 0
    (tmp_path / "config.json").write_text(json.dumps(data))
    before = tree_digest(tmp_path)
    with pytest.raises(RagConfigError, match=r"RagConfig\.n_docs must be an integer >= 1, got 0"):
        RagConfig.from_pretrained(tmp_path)
    assert tree_digest(tmp_path) == before


# === RagTokenizer ===
@pytest.fixture(scope="module")
def tokenizer(question_encoder_tokenizer, bart_tokenizer):
    return RagTokenizer(question_encoder=question_encoder_tokenizer, generator=bart_tokenizer)


@pytest.mark.parametrize(
    "which, value, match",
    [
        pytest.param("question_encoder", None, r"`question_encoder` is None", id="question_encoder-None"),
        pytest.param("generator", None, r"`generator` is None", id="generator-None"),
        pytest.param("generator", "bart", r"`generator` must be a transformers tokenizer .*got str", id="generator-str"),
        pytest.param("question_encoder", 42, r"`question_encoder` must be a transformers tokenizer .*got int",
                     id="question_encoder-int"),
    ],
)
def test_invalid_sub_tokenizer_is_named(question_encoder_tokenizer, bart_tokenizer, which, value, match):
    parts = {"question_encoder": question_encoder_tokenizer, "generator": bart_tokenizer, which: value}
    with pytest.raises(TokenizerInputError, match=match):
        RagTokenizer(**parts)


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(lambda t: t(123), r"`text` must be a string or a list of strings, got int", id="text-int"),
        pytest.param(lambda t: t(["who?", None]), r"`text` .* got a list holding NoneType", id="text-list-with-None"),
        pytest.param(lambda t: t("who?", text_target=5), r"`text_target` must be a string .*got int", id="text_target-int"),
        pytest.param(lambda t: t(text_target=[1, 2]), r"`text_target` .*got a list holding int", id="text_target-ids"),
        pytest.param(lambda t: t.prepare_seq2seq_batch(None), r"`src_texts` must be a string .*got NoneType",
                     id="prepare_seq2seq_batch-src_texts-None"),
        pytest.param(lambda t: t.prepare_seq2seq_batch(["who?"], tgt_texts=[3]), r"`tgt_texts` .*got a list holding int",
                     id="prepare_seq2seq_batch-tgt_texts-ints"),
    ],
)
def test_invalid_text_is_named(tokenizer, call, match):
    with pytest.raises(TokenizerInputError, match=match):
        call(tokenizer)


def test_from_pretrained_with_a_config_that_is_not_a_rag_config(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    before = tree_digest(tmp_path)
    with pytest.raises(TokenizerInputError, match=r"`config` must be a RagConfig, got str"):
        RagTokenizer.from_pretrained(tmp_path, config="rag")
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_from_pretrained_of_a_file_or_missing_path_names_it(tmp_path, kind):
    path = tmp_path / "tokenizer"
    if kind == "file":
        path.write_text("not a folder")
    before = tree_digest(tmp_path)
    error = NotADirectoryError if kind == "file" else OSError
    with pytest.raises(error, match="tokenizer"):
        RagTokenizer.from_pretrained(path)
    assert tree_digest(tmp_path) == before


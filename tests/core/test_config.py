"""RagConfig: every field of the original, round trips with transformers' RagConfig, clear errors."""

import json

import pytest
from transformers import RagConfig as OracleRagConfig

from rag_core import RagConfig, RagConfigError
from tests.harness.configs import COMBINATIONS, tiny_bart_config, tiny_dpr_config, tiny_rag_config

ORIGINAL_FIELDS = [
    "n_docs", "max_combined_length", "retrieval_vector_size", "retrieval_batch_size", "dataset",
    "dataset_split", "index_name", "index_path", "passages_path", "use_dummy_dataset", "reduce_loss",
    "label_smoothing", "do_deduplication", "exclude_bos_score", "do_marginalize", "output_retrieved",
    "use_cache", "title_sep", "doc_sep", "prefix", "bos_token_id", "pad_token_id", "eos_token_id",
    "decoder_start_token_id", "forced_eos_token_id", "vocab_size", "is_encoder_decoder", "dataset_revision",
]  # fmt: skip

NON_DEFAULTS = dict(
    n_docs=7, max_combined_length=77, retrieval_vector_size=16, retrieval_batch_size=3, dataset="my_kb",
    dataset_split="validation", index_name="custom", index_path="/x/index.faiss", passages_path="/x/passages",
    use_dummy_dataset=True, reduce_loss=True, label_smoothing=0.1, do_deduplication=False,
    exclude_bos_score=True, do_marginalize=True, output_retrieved=True, use_cache=False, title_sep=" | ",
    doc_sep=" || ", prefix="question: ", bos_token_id=0, pad_token_id=1, eos_token_id=2,
    decoder_start_token_id=2, forced_eos_token_id=2, vocab_size=1000, dataset_revision="r1",
)  # fmt: skip


def _snapshot(config, fields=ORIGINAL_FIELDS):
    values = {name: getattr(config, name) for name in fields}
    values["question_encoder"] = config.question_encoder.to_dict()
    values["generator"] = config.generator.to_dict()
    for sub in ("question_encoder", "generator"):
        values[sub].pop("transformers_version", None)
    return values


def _oracle_fields(oracle):
    """The original fields the oracle's config has: transformers 5 drops generation parameters
    (`forced_eos_token_id`) from configs; ours keeps every field of transformers 4's RagConfig."""
    return [name for name in ORIGINAL_FIELDS if hasattr(oracle, name)]


def test_every_original_field_is_present_with_the_original_default():
    ours = RagConfig.from_question_encoder_generator_configs(tiny_dpr_config(), tiny_bart_config())
    oracle = OracleRagConfig.from_question_encoder_generator_configs(tiny_dpr_config(), tiny_bart_config())
    assert _snapshot(ours, _oracle_fields(oracle)) == _snapshot(oracle, _oracle_fields(oracle))
    assert all(hasattr(ours, name) for name in ORIGINAL_FIELDS)
    # as transformers 4's RagConfig: taken from the generator when not given
    assert ours.forced_eos_token_id == tiny_bart_config().forced_eos_token_id == 2


@pytest.mark.parametrize("question_encoder,generator", COMBINATIONS)
def test_config_json_round_trips_ours_to_transformers_and_back(tmp_path, question_encoder, generator):
    ours = tiny_rag_config(question_encoder, generator, **NON_DEFAULTS)
    ours.save_pretrained(tmp_path / "ours")
    oracle = OracleRagConfig.from_pretrained(tmp_path / "ours")
    fields = _oracle_fields(oracle)
    assert _snapshot(oracle, fields) == _snapshot(ours, fields)
    assert _snapshot(RagConfig.from_pretrained(tmp_path / "ours")) == _snapshot(ours)
    oracle.save_pretrained(tmp_path / "oracle")
    again = RagConfig.from_pretrained(tmp_path / "oracle")
    assert _snapshot(again, fields) == _snapshot(ours, fields)
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "rag"


def test_config_written_by_transformers_loads_with_sub_config_classes(tmp_path):
    oracle = OracleRagConfig.from_question_encoder_generator_configs(tiny_dpr_config(), tiny_bart_config(), n_docs=4)
    oracle.save_pretrained(tmp_path)
    ours = RagConfig.from_pretrained(tmp_path)
    assert type(ours.question_encoder).__name__ == "DPRConfig"
    assert type(ours.generator).__name__ == "BartConfig"
    assert ours.n_docs == 4 and ours.generator.d_model == 16
    assert ours.resolved_question_encoder_pooling == "dpr"


def test_our_extra_fields_survive_a_transformers_round_trip(tmp_path):
    ours = tiny_rag_config("bert", "bart", question_encoder_pooling="mean", hnsw_ef_search=256, ivf_nprobe=32)
    ours.save_pretrained(tmp_path / "a")
    OracleRagConfig.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    again = RagConfig.from_pretrained(tmp_path / "b")
    assert (again.question_encoder_pooling, again.hnsw_ef_search, again.ivf_nprobe) == ("mean", 256, 32)
    assert tiny_rag_config("bert", "bart").resolved_question_encoder_pooling == "cls"


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_docs", 0),
        ("n_docs", 2.5),
        ("max_combined_length", -1),
        ("retrieval_batch_size", 0),
        ("label_smoothing", 1.0),
        ("label_smoothing", float("nan")),
        ("index_name", "hnsw-please"),
        ("reduce_loss", "yes"),
        ("title_sep", 3),
        ("question_encoder_pooling", "max"),
        ("hnsw_ef_search", 0),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(RagConfigError, match=field):
        tiny_rag_config(**{field: value})


def test_missing_sub_config_is_a_clear_error():
    with pytest.raises(RagConfigError, match="generator"):
        RagConfig(question_encoder=tiny_dpr_config().to_dict())
    with pytest.raises(RagConfigError, match="model_type"):
        RagConfig(question_encoder={"hidden_size": 3}, generator=tiny_bart_config().to_dict())

"""RagTokenizer: both tokenizers together, original on-disk layout, no hidden mode state."""

import numpy as np
import pytest
from transformers import RagTokenizer as OracleRagTokenizer

from rag_core import RagTokenizer
from tests.harness.configs import tiny_rag_config


@pytest.fixture(scope="module")
def tokenizer(question_encoder_tokenizer, bart_tokenizer):
    return RagTokenizer(question_encoder=question_encoder_tokenizer, generator=bart_tokenizer)


QUESTIONS = ["who wrote hamlet?", "which country is bavaria in?"]
ANSWERS = ["William Shakespeare", "Germany"]


def test_questions_use_the_question_encoder_and_targets_the_generator(tokenizer, question_encoder_tokenizer, bart_tokenizer):
    batch = tokenizer(QUESTIONS, text_target=ANSWERS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(batch["input_ids"], question_encoder_tokenizer(QUESTIONS, padding=True, return_tensors="np")["input_ids"])
    np.testing.assert_array_equal(batch["labels"], bart_tokenizer(ANSWERS, padding=True, return_tensors="np")["input_ids"])
    assert tokenizer.batch_decode(batch["labels"], skip_special_tokens=True) == ANSWERS
    assert tokenizer.decode(batch["labels"][1], skip_special_tokens=True) == "Germany"


def test_target_mode_leaves_no_state_behind_even_on_error(tokenizer, question_encoder_tokenizer):
    expected = question_encoder_tokenizer(QUESTIONS[0])["input_ids"]
    with pytest.raises(RuntimeError):
        with tokenizer.as_target_tokenizer():
            assert tokenizer(ANSWERS[0])["input_ids"] != expected
            raise RuntimeError("boom")
    assert tokenizer(QUESTIONS[0])["input_ids"] == expected
    tokenizer.encode_targets(ANSWERS)  # the explicit target API has no mode at all
    assert tokenizer(QUESTIONS[0])["input_ids"] == expected


def test_prepare_seq2seq_batch(tokenizer):
    batch = tokenizer.prepare_seq2seq_batch(QUESTIONS, ANSWERS, return_tensors="np")
    assert batch["input_ids"].shape[0] == 2 and batch["labels"].shape[0] == 2
    assert tokenizer.batch_decode(batch["labels"], skip_special_tokens=True) == ANSWERS


def _same_encodings(a, b):
    for text in QUESTIONS + ANSWERS:
        assert a.question_encoder(text)["input_ids"] == b.question_encoder(text)["input_ids"]
        assert a.generator(text)["input_ids"] == b.generator(text)["input_ids"]


def test_saved_by_us_loads_in_transformers_and_back(tmp_path, tokenizer):
    config = tiny_rag_config()
    config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "question_encoder_tokenizer").is_dir() and (tmp_path / "generator_tokenizer").is_dir()
    oracle = OracleRagTokenizer.from_pretrained(str(tmp_path))
    _same_encodings(tokenizer, oracle)
    oracle.save_pretrained(str(tmp_path / "again"))
    config.save_pretrained(tmp_path / "again")
    _same_encodings(tokenizer, RagTokenizer.from_pretrained(tmp_path / "again"))


def test_t5_generator_tokenizer_round_trip(tmp_path, question_encoder_tokenizer, t5_tokenizer):
    tokenizer = RagTokenizer(question_encoder_tokenizer, t5_tokenizer)
    tokenizer.save_pretrained(tmp_path)
    _same_encodings(tokenizer, RagTokenizer.from_pretrained(tmp_path))


def test_missing_subfolder_is_a_clear_error(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "generator_tokenizer")
    with pytest.raises(FileNotFoundError, match="generator_tokenizer"):
        RagTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="text"):
        tokenizer()

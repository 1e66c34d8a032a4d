"""The pre-tokenized context path equals tokenizing the original's strings, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest

from rag_core.contexts import ContextAssembler, context_string, pad_rows
from tests.harness.passages import PASSAGES

TRICKY = [
    *PASSAGES[:4],
    ('"Quoted"', "A title in DPR's quotes."),
    ('""Double""', "Two quotes: only one pair goes."),
    ("Spaces", "Text  with  double   and triple    spaces."),
    ("Trailing", "Ends with a space "),  # not joinable: falls back to the string path for this row
    ("", ""),  # the empty passage of a missing neighbour
    ("Unicode", "Zürich, naïve café — ½ ﬁ ligature and 東京."),
    ("Tab", "A tab\there and a newline\nthere."),
    ("Long", " ".join(["word"] * 400)),
    ("Title ", "title ending in a space"),
    (" Lead", " text starting with a space"),
]
QUESTIONS = ["who is the brother of moses?", "what  is the capital  of germany? ", "", "naïve café?"]


def _assembler(question_encoder_tokenizer, tokenizer, max_length, doc_sep=" // ", title_sep=" / "):
    return ContextAssembler(question_encoder_tokenizer, tokenizer, title_sep, doc_sep, max_length)


def _string_path(tokenizer, questions, passages, n_docs, prefix, max_length, title_sep=" / ", doc_sep=" // "):
    strings = [
        context_string(t, x, questions[i // n_docs], prefix, title_sep, doc_sep) for i, (t, x) in enumerate(passages)
    ]
    encoded = tokenizer(strings, truncation=True, max_length=max_length)["input_ids"]
    return pad_rows([np.asarray(e) for e in encoded], tokenizer.pad_token_id)


@pytest.mark.parametrize("generator", ["bart", "t5"])
@pytest.mark.parametrize("prefix", [None, "summarize:", "  spaced  "])
@pytest.mark.parametrize("max_length", [300, 24, 6])
def test_joined_pieces_equal_the_tokenized_string(generator_tokenizers, question_encoder_tokenizer, generator, prefix, max_length):
    tokenizer = generator_tokenizers[generator]
    assembler = _assembler(question_encoder_tokenizer, tokenizer, max_length)
    assert assembler.exact  # both harness tokenizers take the fast path
    n_docs = len(TRICKY)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(2)]
    passages = TRICKY + TRICKY[::-1]
    pieces = assembler.encode_passages([p[0] for p in passages], [p[1] for p in passages], prefix)
    ids, mask = assembler.assemble(questions, pieces, n_docs)
    expected_ids, expected_mask = _string_path(tokenizer, questions, passages, n_docs, prefix, max_length)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)
    joined = sum(piece[0] is not None for piece in pieces)
    assert joined >= len(passages) - 8  # only whitespace-ending pieces fell back


@pytest.mark.parametrize("generator", ["bart", "t5"])
def test_questions_are_decoded_with_the_question_encoder_tokenizer(generator_tokenizers, question_encoder_tokenizer, generator):
    tokenizer = generator_tokenizers[generator]
    assembler = _assembler(question_encoder_tokenizer, tokenizer, 300)
    question_ids = question_encoder_tokenizer(QUESTIONS, padding=True, return_tensors="np")["input_ids"]
    questions = assembler.decode_questions(question_ids)
    assert questions == question_encoder_tokenizer.batch_decode(question_ids, skip_special_tokens=True)
    assert questions[1] == "what is the capital of germany?"  # lower-cased, specials and pads gone


@pytest.mark.parametrize("doc_sep", ["\n", "//", " \n", ""])
def test_unusual_doc_sep_uses_the_string_path_and_stays_exact(bart_tokenizer, question_encoder_tokenizer, doc_sep):
    assembler = _assembler(question_encoder_tokenizer, bart_tokenizer, 40, doc_sep=doc_sep)
    assert not assembler.exact
    passages = TRICKY[:5]
    pieces = assembler.encode_passages([p[0] for p in passages], [p[1] for p in passages], None)
    ids, mask = assembler.assemble(QUESTIONS[:1], pieces, len(passages))
    expected_ids, expected_mask = _string_path(bart_tokenizer, QUESTIONS[:1], passages, len(passages), None, 40, doc_sep=doc_sep)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


def test_left_truncation_and_left_padding_follow_the_tokenizer(question_encoder_tokenizer):
    from tests.harness.tokenizers import bart_tokenizer

    tokenizer = bart_tokenizer()
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "left"
    assembler = _assembler(question_encoder_tokenizer, tokenizer, 20)
    assert assembler.exact
    passages = TRICKY[:6]
    pieces = assembler.encode_passages([p[0] for p in passages], [p[1] for p in passages], "question: ")
    ids, mask = assembler.assemble(QUESTIONS[:2], pieces, 3)
    strings = [context_string(t, x, QUESTIONS[i // 3], "question: ", " / ", " // ") for i, (t, x) in enumerate(passages)]
    expected = tokenizer(strings, truncation=True, max_length=20, padding="longest", return_tensors="np")
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])


def test_cached_passages_fetch_each_passage_once(bart_tokenizer, question_encoder_tokenizer):
    assembler = _assembler(question_encoder_tokenizer, bart_tokenizer, 64)
    fetched = []

    def fetch(ids):
        fetched.extend(ids.tolist())
        return [PASSAGES[i][0] for i in ids], [PASSAGES[i][1] for i in ids]

    first = assembler.cached_passages(np.array([[0, 3, -1], [3, 5, 0]]), None, fetch)
    second = assembler.cached_passages(np.array([[5, 0, 3]]), None, fetch)
    assert sorted(fetched) == [0, 3, 5]  # -1 is never fetched; nothing is fetched twice
    np.testing.assert_array_equal(first[0][0], second[1][0])
    assert first[2] == (None, " / ")  # the empty passage falls back to the string path
    assembler.cached_passages(np.array([[0]]), "prefix: ", fetch)
    assert fetched[-1] == 0  # another prefix is another cache

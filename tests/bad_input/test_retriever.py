"""RagRetriever, its index and the context builder: bad question vectors, question ids, n_docs, options
and passages are refused with an error naming the argument (cases already in tests/core/test_retriever.py
and tests/core/test_index.py are not repeated)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rag_core import RagRetriever
from rag_core.errors import ContextInputError, IndexFormatError, RetrievalInputError
from tests.bad_input.support import tree_digest
from tests.harness.configs import HIDDEN, tiny_rag_config
from tests.harness.retrieval import QUESTIONS, tiny_index_paths, tiny_question_ids, tiny_question_vectors


@pytest.fixture(scope="module")
def question_ids(question_encoder_tokenizer):
    return tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])


VECTORS = tiny_question_vectors(2)

# (id, question_hidden_states, n_docs, pattern): refused by both `retriever(...)` and `retriever.retrieve(...)`
BAD_VECTORS = [
    ("ragged-list", [[0.0] * HIDDEN, [0.0] * (HIDDEN - 1)], 3, r"question_hidden_states .*not rectangular"),
    ("bool-dtype", np.ones((2, HIDDEN), bool), 3, r"question_hidden_states must hold real numbers, got dtype bool"),
    ("complex-dtype", np.ones((2, HIDDEN), np.complex64), 3, r"real numbers, got dtype complex64"),
    ("inf-values", np.full((2, HIDDEN), np.inf, np.float32), 3, r"question_hidden_states rows \[0, 1\] hold NaN or infinite"),
    ("float64-overflows-float32", np.full((2, HIDDEN), 1e300), 3, r"rows \[0, 1\] hold NaN or infinite"),
    ("rank-3", np.zeros((2, 1, HIDDEN), np.float32), 3, r"question_hidden_states must have shape \(batch_size, 16\), got rank 3"),
    ("n_docs-float", VECTORS, 2.5, r"n_docs must be a positive integer, got 2.5"),
    ("n_docs-str", VECTORS, "3", r"n_docs must be a positive integer, got '3'"),
    ("n_docs-bool", VECTORS, True, r"n_docs must be a positive integer, got True"),
]


@pytest.mark.parametrize("vectors, n_docs, match", [pytest.param(v, n, m, id=i) for i, v, n, m in BAD_VECTORS])
def test_bad_question_vectors_and_n_docs(tiny_retriever_bart, question_ids, vectors, n_docs, match):
    with pytest.raises(RetrievalInputError, match=match):
        tiny_retriever_bart(question_ids, vectors, n_docs=n_docs)
    with pytest.raises(RetrievalInputError, match=match):
        tiny_retriever_bart.retrieve(vectors, n_docs)


# (id, question_input_ids, pattern): the ids are decoded into the context strings
BAD_QUESTION_IDS = [
    ("rank-1", np.array([101, 2040, 102]), r"question_input_ids must have shape \(batch_size, length\), got shape \(3,\)"),
    ("float-dtype", np.ones((2, 4), np.float32), r"question_input_ids must hold integer token ids, got dtype float32"),
    ("id-beyond-vocabulary", np.array([[101, 10**6], [101, 102]]),
     r"question_input_ids\[0\] holds ids \[1000000\] outside the question encoder tokenizer's vocabulary \[0, 30522\)"),
    ("negative-id", [[101, 102], [101, -1]], r"question_input_ids\[1\] holds ids \[-1\] outside"),
    ("list-of-strings", ["who is moses?", "where is berlin?"], r"question_input_ids\[0\] must be a list of token ids .*got str"),
    ("a-string", "who is moses?", r"question_input_ids must be a 2-D integer array or a list of lists .*got str"),
    ("float-tokens", [[101.5, 102], [101, 102]], r"question_input_ids\[0\] must hold integer token ids, got float 101.5"),
    ("empty-batch", [], r"question_input_ids holds no questions"),
]


@pytest.mark.parametrize("ids, match", [pytest.param(q, m, id=i) for i, q, m in BAD_QUESTION_IDS])
def test_bad_question_ids(tiny_retriever_bart, ids, match):
    with pytest.raises(ContextInputError, match=match):
        tiny_retriever_bart(ids, VECTORS)


@pytest.mark.parametrize(
    "options, match",
    [
        pytest.param({"prefix": 5}, r"prefix must be a string or None, got int 5", id="prefix-int"),
        pytest.param({"return_tensors": "jax"}, r"return_tensors must be one of \(None, 'np', 'pt', 'tf'\), got 'jax'",
                     id="return_tensors-jax"),
    ],
)
def test_bad_call_options(tiny_retriever_bart, question_ids, options, match):
    with pytest.raises(RetrievalInputError, match=match):
        tiny_retriever_bart(question_ids, VECTORS, **options)


def test_bad_doc_ids_to_the_index(tiny_retriever_bart):
    index = tiny_retriever_bart.index
    with pytest.raises(RetrievalInputError, match=r"doc_ids must have shape \(batch_size, n_docs\), got shape \(3,\)"):
        index.get_doc_dicts(np.array([0, 1, 2]))
    with pytest.raises(RetrievalInputError, match=r"doc ids \[99\] are out of range: the index holds 12 passages"):
        index.get_doc_dicts(np.array([[0, 99]]))


# (id, passages, doc_scores, extra options, pattern): the context builder for your own passages
BAD_PASSAGES = [
    ("passages-a-string", "Moses had a brother", None, {}, r"passages must be a list \(one entry per question\)"),
    ("entries-strings", ["Moses", "Berlin"], None, {}, r"each entry of passages must be a list of passages"),
    ("no-passages", [[], []], None, {}, r"every question needs at least one passage"),
    ("dict-without-text", [[{"title": "Moses"}], ["b"]], None, {}, r"passage \[0\]\[0\] must be a string, a \(title, text\) pair"),
    ("three-tuple", [["a"], [("t", "x", "extra")]], None, {}, r"passage \[1\]\[0\] must be a string, a \(title, text\) pair"),
    ("text-None", [[("Moses", None)], ["b"]], None, {}, r"passage \[0\]\[0\]: title and text must be strings"),
    ("doc_scores-nan", [["a"], ["b"]], [[np.nan], [0.0]], {}, r"doc_scores hold NaN or infinite values"),
    ("doc_scores-ragged", [["a", "b"], ["c", "d"]], [[1.0, 2.0], [3.0]], {}, r"doc_scores must be a \(2, 2\) array of numbers"),
    ("doc_scores-strings", [["a"], ["b"]], [["high"], ["low"]], {}, r"doc_scores must be a \(2, 1\) array of numbers"),
    ("return_tensors-int", [["a"], ["b"]], None, {"return_tensors": 5}, r"return_tensors must be one of"),
]


@pytest.mark.parametrize(
    "passages, doc_scores, options, match", [pytest.param(p, s, o, m, id=i) for i, p, s, o, m in BAD_PASSAGES]
)
def test_bad_passages_for_the_context_builder(tiny_retriever_bart, question_ids, passages, doc_scores, options, match):
    with pytest.raises(ContextInputError, match=match):
        tiny_retriever_bart.contexts_from_passages(question_ids, passages, doc_scores=doc_scores, **options)


def test_passages_path_that_is_a_file_is_named_and_left_as_it_is(tmp_path, tiny_passages_dir, question_encoder_tokenizer,
                                                                 bart_tokenizer):
    paths = tiny_index_paths(tiny_passages_dir)
    shutil.copy(paths["index_path"], tmp_path / "index.faiss")
    (tmp_path / "passages").write_text("title,text\nMoses,a prophet\n")
    before = tree_digest(tmp_path)
    config = tiny_rag_config("dpr", "bart", passages_path=str(tmp_path / "passages"), index_path=str(tmp_path / "index.faiss"))
    with pytest.raises(IndexFormatError, match=r"passages_path .*passages' is a file; it must be a folder"):
        RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    assert tree_digest(tmp_path) == before

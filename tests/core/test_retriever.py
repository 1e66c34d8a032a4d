"""RagRetriever on the tiny custom index: outputs, oracle equivalence, invalid slots, errors, save/load.

Threads, index swaps and the passage cache: test_retriever_concurrency.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rag_core import RagRetriever
from rag_core.contexts import ContextInputError, context_string, invalid_doc_mask
from rag_core.index import IndexNotFoundError, RetrievalInputError, UnknownIndexError, index_from_config
from tests.harness.configs import HIDDEN, tiny_rag_config
from tests.harness.passages import PASSAGES
from tests.harness.retrieval import QUESTIONS, tiny_embeddings, tiny_index_paths, tiny_question_ids, tiny_question_vectors

GENERATORS = ["bart", "t5"]


def _expected_top(vectors: np.ndarray, n_docs: int) -> np.ndarray:
    scores = vectors @ tiny_embeddings().T
    return np.argsort(-scores, axis=1, kind="stable")[:, :n_docs]


def _reference_rows(retriever, question_ids, doc_ids, prefix=None):
    """The original's strings, tokenized whole, one row per (question, doc)."""
    questions = retriever.question_encoder_tokenizer.batch_decode(question_ids, skip_special_tokens=True)
    rows = []
    for i, ids in enumerate(doc_ids):
        for doc in ids:
            title, text = PASSAGES[doc] if doc >= 0 else ("", "")
            string = context_string(title, text, questions[i], prefix, retriever.config.title_sep, retriever.config.doc_sep)
            rows.append(retriever.generator_tokenizer(string, truncation=True, max_length=retriever.config.max_combined_length)["input_ids"])
    return rows


def _unpadded(ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    return [row[m.astype(bool)].tolist() for row, m in zip(ids, mask)]


@pytest.mark.parametrize("generator", GENERATORS)
def test_call_returns_documented_shapes_and_the_exact_neighbours(tiny_retriever, question_encoder_tokenizer, generator):
    retriever = tiny_retriever(generator, max_combined_length=300)
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:3])
    vectors = tiny_question_vectors(near=[0, 2, 5])
    out = retriever(question_ids, vectors, return_tensors="np")

    np.testing.assert_array_equal(out["doc_ids"], _expected_top(vectors, 3))
    assert out["doc_ids"].dtype == np.int64 and out["retrieved_doc_embeds"].dtype == np.float32
    np.testing.assert_array_equal(out["retrieved_doc_embeds"], tiny_embeddings()[out["doc_ids"]])
    ids, mask = out["context_input_ids"], out["context_attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 9 and ids.dtype == np.int64 and mask.dtype == np.int64
    assert mask.sum(axis=1).max() == ids.shape[1]  # padded to the longest row, not to max_combined_length
    assert ids.shape[1] < 300
    np.testing.assert_array_equal(ids[mask == 0], retriever.generator_tokenizer.pad_token_id)
    assert _unpadded(ids, mask) == _reference_rows(retriever, question_ids, out["doc_ids"])


@pytest.mark.parametrize("generator", GENERATORS)
def test_prefix_and_truncation_match_the_string_format(tiny_retriever, question_encoder_tokenizer, generator):
    retriever = tiny_retriever(generator)  # max_combined_length 48 truncates most rows
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS)
    vectors = tiny_question_vectors(near=[1, 3, 5, 7])
    for prefix in (None, "question: ", "summarize:"):
        out = retriever(question_ids, vectors, prefix=prefix, n_docs=4, return_tensors="np")
        expected = _reference_rows(retriever, question_ids, out["doc_ids"], prefix=prefix)
        assert _unpadded(out["context_input_ids"], out["context_attention_mask"]) == expected
        assert max(len(r) for r in expected) == 48


def test_matches_transformers_rag_retriever(tiny_passages_dir, question_encoder_tokenizer, bart_tokenizer):
    from transformers import RagConfig as HFRagConfig
    from transformers import RagRetriever as HFRagRetriever

    config = tiny_rag_config("dpr", "bart", max_combined_length=64, **tiny_index_paths(tiny_passages_dir))
    ours = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    theirs = HFRagRetriever(HFRagConfig(**config.to_dict()), question_encoder_tokenizer, bart_tokenizer)
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS)
    vectors = tiny_question_vectors(near=[0, 4, 8, 11])
    for n_docs in (1, 3):
        a = ours(question_ids, vectors, n_docs=n_docs, return_tensors="np")
        b = theirs(question_ids, vectors, n_docs=n_docs, return_tensors="np")
        np.testing.assert_array_equal(a["doc_ids"], b["doc_ids"])
        np.testing.assert_allclose(a["retrieved_doc_embeds"], b["retrieved_doc_embeds"], rtol=0, atol=0)
        assert b["context_input_ids"].shape[1] == 64  # theirs pads to max_combined_length
        assert _unpadded(a["context_input_ids"], a["context_attention_mask"]) == _unpadded(
            b["context_input_ids"], b["context_attention_mask"]
        )
        embeds, doc_ids, dicts = ours.retrieve(vectors, n_docs)
        _, _, their_dicts = theirs.retrieve(vectors, n_docs)
        assert [d["title"] for d in dicts] == [d["title"] for d in their_dicts]
        assert [d["text"] for d in dicts] == [d["text"] for d in their_dicts]


def test_missing_neighbours_stay_invalid_with_empty_passages(tiny_retriever_bart, question_encoder_tokenizer):
    retriever = tiny_retriever_bart
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])
    vectors = tiny_question_vectors(near=[0, 1])
    out = retriever(question_ids, vectors, n_docs=len(PASSAGES) + 3, return_tensors="np")
    doc_ids = out["doc_ids"]
    np.testing.assert_array_equal(invalid_doc_mask(doc_ids), np.arange(len(PASSAGES) + 3)[None, :].repeat(2, 0) >= len(PASSAGES))
    np.testing.assert_array_equal(np.sort(doc_ids[:, : len(PASSAGES)], axis=1), np.arange(len(PASSAGES))[None].repeat(2, 0))
    np.testing.assert_array_equal(out["retrieved_doc_embeds"][:, len(PASSAGES) :], 0.0)
    assert _unpadded(out["context_input_ids"], out["context_attention_mask"]) == _reference_rows(retriever, question_ids, doc_ids)
    _, _, dicts = retriever.retrieve(vectors, len(PASSAGES) + 1)
    assert dicts[0]["title"][-1] == "" and dicts[0]["text"][-1] == ""
    np.testing.assert_array_equal(dicts[0]["embeddings"][-1], np.zeros(HIDDEN, np.float32))


def test_retrieve_returns_passages_and_chunks_by_retrieval_batch_size(tiny_retriever):
    vectors = tiny_question_vectors(batch_size=7, seed=3)
    chunked = tiny_retriever("bart", retrieval_batch_size=2)
    whole = tiny_retriever("bart", retrieval_batch_size=8)
    embeds_a, ids_a, dicts_a = chunked.retrieve(vectors, 4)
    embeds_b, ids_b, dicts_b = whole.retrieve(vectors, 4)
    np.testing.assert_array_equal(ids_a, _expected_top(vectors, 4))
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(embeds_a, embeds_b)
    assert len(dicts_a) == 7 and dicts_a == [dict(d) for d in dicts_a]
    for row, d in zip(ids_a, dicts_a):
        assert d["title"] == [PASSAGES[i][0] for i in row] and d["text"] == [PASSAGES[i][1] for i in row]
        np.testing.assert_array_equal(d["embeddings"], tiny_embeddings()[row])


@pytest.mark.parametrize(
    "vectors, n_docs, match",
    [
        (np.zeros((2, HIDDEN + 1), np.float32), 3, "dimension 17"),
        (np.zeros((HIDDEN,), np.float32), 3, "rank 1"),
        (np.full((2, HIDDEN), np.nan, np.float32), 3, "NaN"),
        (np.zeros((0, HIDDEN), np.float32), 3, "no questions"),
        (np.zeros((2, HIDDEN), np.float32), 0, "n_docs must be a positive integer"),
        (np.zeros((2, HIDDEN), np.float32), -1, "n_docs must be a positive integer"),
        (np.array([["a"] * HIDDEN] * 2), 3, "real numbers"),
    ],
)
def test_bad_question_vectors_and_n_docs_are_named(tiny_retriever_bart, question_encoder_tokenizer, vectors, n_docs, match):
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])
    with pytest.raises(RetrievalInputError, match=match):
        tiny_retriever_bart(question_ids[: max(len(vectors), 1)] if vectors.ndim == 2 else question_ids, vectors, n_docs=n_docs)
    with pytest.raises(RetrievalInputError, match=match):
        tiny_retriever_bart.retrieve(vectors, n_docs)


def test_question_rows_must_match_vectors(tiny_retriever_bart, question_encoder_tokenizer):
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:3])
    with pytest.raises(RetrievalInputError, match="3 rows but question_hidden_states has 2"):
        tiny_retriever_bart(question_ids, tiny_question_vectors(2))


def test_config_errors_name_the_missing_piece(tiny_passages_dir, question_encoder_tokenizer, bart_tokenizer, tmp_path):
    config = tiny_rag_config("dpr", "bart", **tiny_index_paths(tiny_passages_dir))
    bad = copy.deepcopy(config)
    bad.index_name = "wiki"
    with pytest.raises(UnknownIndexError, match="unknown index_name 'wiki'"):
        RagRetriever(bad, question_encoder_tokenizer, bart_tokenizer)
    missing = tiny_rag_config("dpr", "bart", passages_path=str(tmp_path / "nope"), index_path=str(tmp_path / "x.faiss"))
    with pytest.raises(IndexNotFoundError, match="passages_path .*nope.* does not exist"):
        index_from_config(missing)
    no_index = tiny_rag_config("dpr", "bart", passages_path=tiny_index_paths(tiny_passages_dir)["passages_path"])
    with pytest.raises(IndexNotFoundError, match="needs RagConfig.index_path"):
        index_from_config(no_index)
    with pytest.raises(IndexNotFoundError, match="reads wiki_dpr from local files"):
        index_from_config(tiny_rag_config("dpr", "bart", index_name="compressed"))


def test_contexts_from_passages_without_a_loaded_index(tiny_passages_dir, question_encoder_tokenizer, t5_tokenizer):
    config = tiny_rag_config("dpr", "t5", max_combined_length=300, **tiny_index_paths(tiny_passages_dir))
    retriever = RagRetriever(config, question_encoder_tokenizer, t5_tokenizer, init_retrieval=False)
    assert not retriever.index.is_initialized()
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])
    passages = [[PASSAGES[0], "Moses had  a brother. "], [("\"Berlin\"", PASSAGES[2][1]), {"title": "Bavaria", "text": PASSAGES[1][1]}]]
    out = retriever.contexts_from_passages(question_ids, passages)
    np.testing.assert_array_equal(out["doc_scores"], np.zeros((2, 2), np.float32))
    questions = question_encoder_tokenizer.batch_decode(question_ids, skip_special_tokens=True)
    flat = [PASSAGES[0], ("", "Moses had  a brother. "), ("\"Berlin\"", PASSAGES[2][1]), PASSAGES[1]]
    expected = [
        t5_tokenizer(context_string(t, x, questions[i // 2], None, " / ", " // "), truncation=True, max_length=300)["input_ids"]
        for i, (t, x) in enumerate(flat)
    ]
    assert _unpadded(out["context_input_ids"], out["context_attention_mask"]) == expected
    scores = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(retriever.contexts_from_passages(question_ids, passages, doc_scores=scores)["doc_scores"], scores)
    with pytest.raises(ContextInputError, match="same number of passages"):
        retriever.contexts_from_passages(question_ids, [["a", "b"], ["c"]])
    with pytest.raises(ContextInputError, match="doc_scores must have shape"):
        retriever.contexts_from_passages(question_ids, passages, doc_scores=np.zeros((2, 3)))
    with pytest.raises(ContextInputError, match="2 questions"):
        retriever.contexts_from_passages(question_ids, [["a"]])


def test_ctx_encoder_tokenizer_returns_tokenized_passages(tiny_passages_dir, question_encoder_tokenizer, bart_tokenizer):
    config = tiny_rag_config("dpr", "bart", **tiny_index_paths(tiny_passages_dir))
    retriever = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    retriever.set_ctx_encoder_tokenizer(question_encoder_tokenizer)
    vectors = tiny_question_vectors(near=[3, 6])
    out = retriever(tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2]), vectors, return_tensors="np")
    flat = out["doc_ids"].reshape(-1)
    expected = question_encoder_tokenizer(
        [PASSAGES[i][0] for i in flat], [PASSAGES[i][1] for i in flat], truncation=True, padding="longest", return_tensors="np"
    )
    np.testing.assert_array_equal(out["tokenized_doc_ids"], expected["input_ids"])
    np.testing.assert_array_equal(out["tokenized_doc_attention_mask"], expected["attention_mask"])


def test_save_and_from_pretrained_round_trip(tiny_retriever_bart, question_encoder_tokenizer, tmp_path):
    tiny_retriever_bart.save_pretrained(tmp_path / "retriever")
    assert (tmp_path / "retriever" / "question_encoder_tokenizer").is_dir()
    assert (tmp_path / "retriever" / "generator_tokenizer").is_dir()
    loaded = RagRetriever.from_pretrained(tmp_path / "retriever")
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS)
    vectors = tiny_question_vectors(near=[0, 1, 2, 3])
    a, b = tiny_retriever_bart(question_ids, vectors, return_tensors="np"), loaded(question_ids, vectors, return_tensors="np")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_from_pretrained_with_an_indexed_dataset(tiny_retriever_bart, question_encoder_tokenizer, tmp_path):
    import datasets

    tiny_retriever_bart.save_pretrained(tmp_path / "r")
    dataset = datasets.load_from_disk(tiny_retriever_bart.config.passages_path)
    dataset.add_faiss_index("embeddings", metric_type=0)  # faiss.METRIC_INNER_PRODUCT
    retriever = RagRetriever.from_pretrained(tmp_path / "r", indexed_dataset=dataset)
    vectors = tiny_question_vectors(near=[5, 9])
    _, doc_ids, dicts = retriever.retrieve(vectors, 2)
    np.testing.assert_array_equal(doc_ids, _expected_top(vectors, 2))
    retriever.save_pretrained(tmp_path / "saved")  # writes the in-memory dataset and its index
    reloaded = RagRetriever.from_pretrained(tmp_path / "saved")
    np.testing.assert_array_equal(reloaded.retrieve(vectors, 2)[1], doc_ids)
    assert reloaded.config.passages_path == str(tmp_path / "saved" / "hf_dataset")

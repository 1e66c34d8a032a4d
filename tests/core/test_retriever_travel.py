"""A retriever that travels (pickle, deepcopy, another process) without its loaded index, and the
original's output formats: every passage column in `doc_dicts`, lists for `return_tensors=None`,
question ids as numpy, lists or any tensor."""

from __future__ import annotations

import copy
import multiprocessing
import os
import pickle

import numpy as np
import pytest

from rag_core import RagRetriever
from rag_core.index import IndexNotInitializedError
from tests.harness.configs import tiny_rag_config
from tests.harness.passages import PASSAGES
from tests.harness.retrieval import (
    QUESTIONS,
    tiny_embeddings,
    tiny_index_paths,
    tiny_question_ids,
    tiny_question_vectors,
    write_passages,
)

KEYS = ("context_input_ids", "context_attention_mask", "retrieved_doc_embeds", "doc_ids")


def _retrieve_np(retriever, question_ids, vectors, n_docs=3) -> dict:
    out = retriever(question_ids, vectors, n_docs=n_docs, return_tensors="np")
    return {key: np.asarray(out[key]) for key in KEYS}


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def inputs(question_encoder_tokenizer):
    return tiny_question_ids(question_encoder_tokenizer, QUESTIONS), tiny_question_vectors(near=[0, 3, 6, 9])


# === pickle ===
def test_a_pickled_retriever_loads_its_index_on_first_use_and_retrieves_the_same(tiny_retriever_bart, inputs):
    expected = _retrieve_np(tiny_retriever_bart, *inputs)
    clone = pickle.loads(pickle.dumps(tiny_retriever_bart))
    assert clone.index is not tiny_retriever_bart.index
    assert not clone.index.is_initialized()  # nothing loaded came along
    _assert_same(_retrieve_np(clone, *inputs), expected)
    assert clone.index.is_initialized()
    _, doc_ids, dicts = clone.retrieve(inputs[1], 2)
    assert [d["title"] for d in dicts] == [[PASSAGES[i][0] for i in row] for row in doc_ids]


def test_an_index_never_loaded_stays_unloaded_in_its_copies(
    tiny_passages_dir, question_encoder_tokenizer, bart_tokenizer, inputs
):
    config = tiny_rag_config("dpr", "bart", **tiny_index_paths(tiny_passages_dir))
    retriever = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer, init_retrieval=False)
    for clone in (pickle.loads(pickle.dumps(retriever)), copy.deepcopy(retriever)):
        with pytest.raises(IndexNotInitializedError, match="init_retrieval"):
            clone.retrieve(inputs[1], 2)
        clone.init_retrieval()
        _assert_same(_retrieve_np(clone, *inputs), _retrieve_np(clone, *inputs))


def test_the_pickle_is_kilobytes_plus_the_tokenizers(tmp_path, question_encoder_tokenizer, bart_tokenizer, inputs):
    n, dim = 40_000, 64
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    paths = write_passages(str(tmp_path), [(f"title {i}", f"passage number {i}") for i in range(n)], vectors)
    config = tiny_rag_config("dpr", "bart", retrieval_vector_size=dim, **paths)
    retriever = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    questions = np.random.default_rng(1).standard_normal((4, dim)).astype(np.float32)
    expected = _retrieve_np(retriever, inputs[0], questions)  # loaded, and the passage cache filled
    size = len(pickle.dumps(retriever))
    tokenizers = len(pickle.dumps((retriever.question_encoder_tokenizer, retriever.generator_tokenizer)))
    assert size - tokenizers < 32_000, (size, tokenizers)
    assert size < vectors.nbytes / 5, (size, vectors.nbytes)
    _assert_same(_retrieve_np(pickle.loads(pickle.dumps(retriever)), inputs[0], questions), expected)


def test_an_in_memory_index_refuses_pickle_and_says_what_to_do(tiny_retriever_bart, tmp_path, inputs):
    import datasets

    dataset = datasets.load_from_disk(tiny_retriever_bart.config.passages_path)
    dataset.add_faiss_index("embeddings", metric_type=0)  # faiss.METRIC_INNER_PRODUCT
    tiny_retriever_bart.save_pretrained(tmp_path / "r")
    retriever = RagRetriever.from_pretrained(tmp_path / "r", indexed_dataset=dataset)
    with pytest.raises(TypeError, match="save_pretrained"):
        pickle.dumps(retriever)
    clone = copy.deepcopy(retriever)  # within a process: shares the in-memory index
    assert clone.index.faiss_index is retriever.index.faiss_index
    _assert_same(_retrieve_np(clone, *inputs), _retrieve_np(retriever, *inputs))


# === deepcopy ===
def test_deepcopy_shares_the_loaded_index_and_copies_the_rest(tiny_retriever_bart, inputs):
    expected = _retrieve_np(tiny_retriever_bart, *inputs)
    clone = copy.deepcopy(tiny_retriever_bart)
    assert clone.index.is_initialized()
    assert clone.index.faiss_index is tiny_retriever_bart.index.faiss_index  # not duplicated
    assert clone.config is not tiny_retriever_bart.config and clone.config.to_dict() == tiny_retriever_bart.config.to_dict()
    assert clone.generator_tokenizer is not tiny_retriever_bart.generator_tokenizer
    assert clone.contexts is not tiny_retriever_bart.contexts and clone.contexts.lock is not tiny_retriever_bart.contexts.lock
    _assert_same(_retrieve_np(clone, *inputs), expected)
    clone.n_docs = 1
    assert tiny_retriever_bart.n_docs == 3


# === another process ===
def _retrieve_in_worker(retriever, question_ids, vectors):
    return os.getpid(), _retrieve_np(retriever, question_ids, vectors)


def test_a_spawned_worker_retrieves_what_this_process_does(tiny_retriever_bart, inputs):
    expected = _retrieve_np(tiny_retriever_bart, *inputs)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pid, got = pool.apply(_retrieve_in_worker, (tiny_retriever_bart, *inputs))
    assert pid != os.getpid()
    _assert_same(got, expected)


# === the original's formats ===
@pytest.fixture(scope="module")
def wiki_like(tmp_path_factory, question_encoder_tokenizer, bart_tokenizer):
    """Passages with wiki_dpr's columns (id, text, title, embeddings): ours and transformers' retriever."""
    import datasets
    import faiss
    from transformers import RagConfig as OracleRagConfig
    from transformers import RagRetriever as OracleRagRetriever

    folder = str(tmp_path_factory.mktemp("wiki_like"))
    embeddings = tiny_embeddings()
    dataset = datasets.Dataset.from_dict(
        {
            "id": [str(100 + i) for i in range(len(PASSAGES))],
            "text": [p[1] for p in PASSAGES],
            "title": [p[0] for p in PASSAGES],
            "embeddings": embeddings.tolist(),
        },
        features=datasets.Features(
            {
                "id": datasets.Value("string"),
                "text": datasets.Value("string"),
                "title": datasets.Value("string"),
                "embeddings": datasets.Sequence(datasets.Value("float32")),
            }
        ),
    )
    dataset.save_to_disk(os.path.join(folder, "passages"))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    faiss.write_index(index, os.path.join(folder, "index.faiss"))
    config = tiny_rag_config("dpr", "bart", max_combined_length=64, **tiny_index_paths(folder))
    ours = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    theirs = OracleRagRetriever(OracleRagConfig(**config.to_dict()), question_encoder_tokenizer, bart_tokenizer)
    return ours, theirs


def test_doc_dicts_carry_every_column_as_the_original_gives_them(wiki_like):
    ours, theirs = wiki_like
    vectors = tiny_question_vectors(near=[2, 7, 11])
    embeds, doc_ids, mine = ours.retrieve(vectors, 3)
    _, their_ids, their_dicts = theirs.retrieve(vectors, 3)
    np.testing.assert_array_equal(doc_ids, their_ids)
    assert len(mine) == len(their_dicts) == 3
    for a, b in zip(mine, their_dicts):
        assert sorted(a) == sorted(b) == ["embeddings", "id", "text", "title"]
        for key in ("id", "text", "title"):
            assert isinstance(a[key], list) and a[key] == list(b[key])
        assert isinstance(a["embeddings"], np.ndarray) and a["embeddings"].dtype == np.asarray(b["embeddings"]).dtype
        np.testing.assert_array_equal(a["embeddings"], b["embeddings"])
    assert mine[0]["id"] == [str(100 + i) for i in doc_ids[0]]
    np.testing.assert_array_equal(np.stack([d["embeddings"] for d in mine]), embeds)


def test_an_empty_slot_has_no_value_in_the_other_columns(wiki_like):
    ours, _ = wiki_like
    _, doc_ids, dicts = ours.retrieve(tiny_question_vectors(near=[0]), len(PASSAGES) + 1)
    assert doc_ids[0, -1] == -1
    assert (dicts[0]["id"][-1], dicts[0]["title"][-1], dicts[0]["text"][-1]) == (None, "", "")
    assert all(isinstance(i, str) for i in dicts[0]["id"][:-1])


def test_return_tensors_none_gives_lists_as_the_original(wiki_like, question_encoder_tokenizer):
    ours, theirs = wiki_like
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])
    vectors = tiny_question_vectors(near=[1, 5])
    a, b = ours(question_ids.tolist(), vectors), theirs(question_ids.tolist(), vectors)
    for key in ("context_input_ids", "context_attention_mask"):
        assert type(a[key]) is type(b[key]) is list
        assert all(isinstance(row, list) and all(type(x) is int for x in row) for row in a[key])
    for key in ("retrieved_doc_embeds", "doc_ids"):
        assert type(a[key]) is type(b[key]) is np.ndarray
        np.testing.assert_array_equal(a[key], b[key])

    def unpadded(out):
        return [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(out["context_input_ids"], out["context_attention_mask"])]

    assert unpadded(a) == unpadded(b)
    assert len({len(row) for row in a["context_input_ids"]}) == 1  # rectangular: padded to the longest row


class _EagerLike:
    """What a TensorFlow eager tensor offers for reading: `.numpy()`."""

    def __init__(self, array):
        self._array = array

    def numpy(self):
        return self._array


class _ArrayLike:
    """What a JAX or CuPy-on-host array offers: `__array__`."""

    def __init__(self, array):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)


def test_question_ids_may_be_lists_arrays_or_tensor_likes(tiny_retriever_bart, inputs):
    question_ids, vectors = inputs
    expected = _retrieve_np(tiny_retriever_bart, question_ids, vectors)
    for given in (question_ids.tolist(), _EagerLike(question_ids), _ArrayLike(question_ids)):
        _assert_same(_retrieve_np(tiny_retriever_bart, given, vectors), expected)


@pytest.mark.tf
def test_question_ids_may_be_a_tensorflow_tensor(tiny_retriever_bart, inputs):
    tf = pytest.importorskip("tensorflow")
    question_ids, vectors = inputs
    got = _retrieve_np(tiny_retriever_bart, tf.constant(question_ids), vectors)
    _assert_same(got, _retrieve_np(tiny_retriever_bart, question_ids, vectors))

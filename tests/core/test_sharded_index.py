"""`build_index --shards`, `--split-index` and `ShardedIndex`: exact merging, loading through the config, atomic output."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from rag_core import RagRetriever
from rag_core.build_index import build_index, main
from rag_core.build_shards import split_index
from rag_core.index import CustomIndex, IndexFormatError, IndexNotFoundError, ShardedIndex
from tests.harness.configs import HIDDEN, tiny_rag_config
from tests.harness.files import leftovers, snapshot, write_half_then_fail
from tests.harness.passages import PASSAGES

N, DIM = 200, HIDDEN  # 3 shards of 67, 67 and 66 passages


def _vectors(n=N, dim=DIM, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _pairs(n=N):
    return [(f"title {i}", f"passage number {i}") for i in range(n)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One flat index and the same passages in 3 flat shards, built from precomputed embeddings."""
    root = tmp_path_factory.mktemp("sharded")
    vectors = _vectors()
    single = build_index(_pairs(), root / "single", embeddings=vectors, split=False, progress=False)
    sharded = build_index(_pairs(), root / "sharded", embeddings=vectors, split=False, progress=False, shards=3)
    return root, vectors, single, sharded


def _search(index, queries, k):
    index.init_index()
    return index.search(queries, k)


def test_flat_shards_equal_one_flat_index(built):
    _, vectors, single, sharded = built
    manifest = json.loads(open(os.path.join(sharded, "shards.json")).read())
    assert [(s["start"], s["end"], s["num_passages"]) for s in manifest["shards"]] == [(0, 67, 67), (67, 134, 67), (134, 200, 66)]
    assert manifest["num_passages"] == N and manifest["dim"] == DIM and manifest["index_kind"] == "flat"
    one, many = CustomIndex(DIM, single), ShardedIndex(DIM, sharded)
    assert many.num_shards == 3 and len(_search(many, vectors[:1], 1)[1]) == 1 and len(many) == N
    queries = np.concatenate([_vectors(100, seed=1), vectors[[0, 66, 67, 133, 134, 199]]])  # and the shard edges
    for k in (1, 5, 20, 66, 67, 100, N):  # up to more than one shard holds
        scores_one, ids_one = _search(one, queries, k)
        scores_many, ids_many = _search(many, queries, k)
        np.testing.assert_array_equal(ids_many, ids_one)
        np.testing.assert_allclose(scores_many, scores_one, rtol=1e-6, atol=1e-6)
        assert (ids_many >= 0).all()  # a shard's empty slots never reach the merged result
    np.testing.assert_array_equal(_search(many, vectors[[0, 66, 67, 199]], 1)[1][:, 0], [0, 66, 67, 199])
    # more than all passages: -1 only after the last real one
    _, ids = _search(many, queries[:7], N + 5)
    np.testing.assert_array_equal(ids[:, N:], -1)
    np.testing.assert_array_equal(np.sort(ids[:, :N], axis=1), np.tile(np.arange(N), (7, 1)))
    doc_ids, embeds = many.get_top_docs(queries[:4], 70)
    np.testing.assert_array_equal(doc_ids, one.get_top_docs(queries[:4], 70)[0])
    np.testing.assert_array_equal(embeds, vectors[doc_ids])
    dicts = many.get_doc_dicts(np.array([[0, 66, 67, 199, -1]]))
    assert dicts[0]["title"] == ["title 0", "title 66", "title 67", "title 199", ""]
    np.testing.assert_array_equal(dicts[0]["embeddings"][:4], vectors[[0, 66, 67, 199]])


def test_ties_break_by_global_id(tmp_path):
    vectors = np.tile(_vectors(1), (9, 1))  # nine identical passages: every score ties
    out = build_index(_pairs(9), tmp_path / "kb", embeddings=vectors, split=False, progress=False, shards=3)
    _, ids = _search(ShardedIndex(DIM, out), vectors[:2], 9)
    np.testing.assert_array_equal(ids, np.tile(np.arange(9), (2, 1)))


def test_split_index_equals_building_in_shards(built, tmp_path, capsys):
    root, vectors, single, sharded = built
    assert main(["--split-index", single, str(tmp_path / "split"), "--shards", "3", "--no-progress"]) == 0
    assert "wrote 200 passages (16-dim, flat) in 3 shards" in capsys.readouterr().out
    split, built_ = (json.loads(open(os.path.join(p, "shards.json")).read()) for p in (tmp_path / "split", sharded))
    assert split["shards"] == built_["shards"]
    for entry in split["shards"]:  # every shard is a normal index folder of its own
        a, b = CustomIndex(DIM, tmp_path / "split" / entry["folder"]), CustomIndex(DIM, os.path.join(sharded, entry["folder"]))
        a.init_index(), b.init_index()
        rows = np.arange(entry["num_passages"])
        np.testing.assert_array_equal(a._passages.embeddings(rows), b._passages.embeddings(rows))
        np.testing.assert_array_equal(a._passages.embeddings(rows), vectors[entry["start"] : entry["end"]])
        assert a.get_passages(rows) == b.get_passages(rows)
    queries = _vectors(50, seed=2)
    for k in (3, 80):
        scores_a, ids_a = _search(ShardedIndex(DIM, tmp_path / "split"), queries, k)
        scores_b, ids_b = _search(ShardedIndex(DIM, sharded), queries, k)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(scores_a, scores_b, rtol=1e-6, atol=1e-6)


def test_hnsw_shards_recall_at_least_one_hnsw_index(tmp_path):
    # small graphs searched with a low efSearch, so that one HNSW index misses neighbours
    n, dim, settings = 2000, 24, dict(index_kind="hnsw", hnsw_m=8, ef_construction=40)
    vectors = _vectors(n, dim, seed=3)
    pairs = [("", f"p{i}") for i in range(n)]
    exact = build_index(pairs, tmp_path / "flat", embeddings=vectors, split=False, progress=False)
    one = build_index(pairs, tmp_path / "one", embeddings=vectors, split=False, progress=False, **settings)
    split = split_index(one, tmp_path / "split", 3, progress=False)
    assert json.loads(open(os.path.join(split, "shards.json")).read())["index_kind"] == "hnsw"
    queries = _vectors(200, dim, seed=4)
    for k in (5, 20):
        _, truth = _search(CustomIndex(dim, exact), queries, k)
        recall = {}
        for name, index in (("one", CustomIndex(dim, one, hnsw_ef_search=16)), ("sharded", ShardedIndex(dim, split, hnsw_ef_search=16))):
            _, ids = _search(index, queries, k)
            recall[name] = np.mean([len(set(ids[i]) & set(truth[i])) / k for i in range(len(queries))])
        # measured: recall@5 0.84 (one) vs 0.97 (3 shards), recall@20 0.73 vs 0.92; 0.01 allows for faiss'
        # threaded graph construction
        assert recall["sharded"] >= recall["one"] - 0.01, recall
        assert recall["one"] < 1.0  # the settings do make one HNSW index approximate


def test_retriever_over_shards_equals_single_index(tmp_path, question_encoder_tokenizer, bart_tokenizer):
    from tests.harness.retrieval import QUESTIONS, tiny_question_ids

    vectors = _vectors(len(PASSAGES), seed=5)
    common = dict(embeddings=vectors, split=False, progress=False, generator_tokenizer=bart_tokenizer)
    single = build_index(PASSAGES, tmp_path / "single", **common)
    sharded = build_index(PASSAGES, tmp_path / "sharded", shards=3, **common)
    config = lambda path: tiny_rag_config("dpr", "bart", passages_path=path, max_combined_length=200)  # noqa: E731
    one = RagRetriever(config(single), question_encoder_tokenizer, bart_tokenizer)
    many = RagRetriever(config(sharded), question_encoder_tokenizer, bart_tokenizer)
    assert isinstance(many.index, ShardedIndex) and many.index.is_initialized()
    assert many._stored_ids_reader() is not None  # the shards' pre-tokenized passages are used
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:3])
    queries = _vectors(3, seed=6)
    for n_docs in (2, 5, len(PASSAGES)):  # 5: more than one shard's 4 passages
        a, b = one(question_ids, queries, n_docs=n_docs), many(question_ids, queries, n_docs=n_docs)
        for key in ("context_input_ids", "context_attention_mask", "doc_ids", "retrieved_doc_embeds"):
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    # the index given directly, and a pickled copy, answer the same
    direct = RagRetriever(config(single), question_encoder_tokenizer, bart_tokenizer, index=ShardedIndex(HIDDEN, sharded))
    np.testing.assert_array_equal(direct.retrieve(queries, 5)[1], one.retrieve(queries, 5)[1])
    for copied in (pickle.loads(pickle.dumps(many.index)), copy.deepcopy(many.index)):
        np.testing.assert_array_equal(copied.get_top_docs(queries, 5)[0], one.retrieve(queries, 5)[1])
    by_index_path = tiny_rag_config("dpr", "bart", index_path=sharded)
    assert isinstance(RagRetriever(by_index_path, question_encoder_tokenizer, bart_tokenizer, init_retrieval=False).index, ShardedIndex)


def test_failure_while_writing_a_shard_leaves_nothing(tmp_path, monkeypatch):
    import rag_core.build_index as builder

    write = builder._write_index_folder
    calls = []

    def fail_on_second_shard(folder, dataset, index, manifest, progress):
        calls.append(folder)
        if len(calls) == 2:  # the disk fills up half-way through shard 1's faiss file
            os.makedirs(folder)
            write_half_then_fail(os.path.join(folder, "index.faiss"), b"x" * 1000)
        return write(folder, dataset, index, manifest, progress)

    monkeypatch.setattr(builder, "_write_index_folder", fail_on_second_shard)
    vectors = _vectors(30)
    with pytest.raises(OSError, match="No space left"):
        build_index(_pairs(30), tmp_path / "kb", embeddings=vectors, split=False, progress=False, shards=3)
    assert os.listdir(tmp_path) == [] and len(calls) == 2
    # over an existing output: kept as it was
    monkeypatch.undo()
    out = build_index(_pairs(30), tmp_path / "kb", embeddings=vectors, split=False, progress=False, shards=2)
    before = snapshot(out)
    calls.clear()
    monkeypatch.setattr(builder, "_write_index_folder", fail_on_second_shard)
    with pytest.raises(OSError, match="No space left"):
        build_index(_pairs(30), out, embeddings=vectors, split=False, progress=False, shards=3, overwrite=True)
    assert snapshot(out) == before and leftovers(out) == []


def test_missing_or_damaged_shard_is_named(built, tmp_path, question_encoder_tokenizer, bart_tokenizer):
    _, _, _, sharded = built
    copy_ = shutil.copytree(sharded, tmp_path / "kb")
    shutil.rmtree(copy_ / "shard-00001")
    with pytest.raises(IndexNotFoundError, match=r"shard 1 \('shard-00001', ids \[67, 134\)\).* is missing"):
        ShardedIndex(DIM, copy_)
    with pytest.raises(IndexNotFoundError, match="shard 1"):
        RagRetriever(tiny_rag_config("dpr", "bart", passages_path=str(copy_)), question_encoder_tokenizer, bart_tokenizer)
    shutil.copytree(os.path.join(sharded, "shard-00001"), copy_ / "shard-00001")
    (copy_ / "shard-00002" / "passages" / "state.json").unlink()  # found only when the shard is loaded
    index = ShardedIndex(DIM, copy_)
    with pytest.raises(IndexNotFoundError, match="shard 2 .*state.json"):
        index.init_index()
    assert not index.is_initialized()
    (copy_ / "shards.json").write_text(json.dumps({"format": "rag_core.sharded_index", "layout_version": 1, "shards": []}))
    with pytest.raises(IndexFormatError, match="lists no shards"):
        ShardedIndex(DIM, copy_)
    with pytest.raises(IndexFormatError, match="16-dim vectors but RagConfig.retrieval_vector_size=8"):
        ShardedIndex(8, sharded)


@pytest.mark.parametrize("shards", [0, -2, 13])
def test_bad_shard_counts_are_refused(tmp_path, capsys, shards):
    vectors = _vectors(len(PASSAGES))
    message = "more than the 12 passages" if shards == 13 else "shards must be at least 1"
    with pytest.raises(ValueError, match=message):
        build_index(PASSAGES, tmp_path / "kb", embeddings=vectors, split=False, progress=False, shards=shards)
    source = tmp_path / "kb.jsonl"
    source.write_text("".join(json.dumps({"title": t, "text": x}) + "\n" for t, x in PASSAGES))
    np.save(tmp_path / "e.npy", vectors)
    assert main([str(source), str(tmp_path / "kb"), "--embeddings", str(tmp_path / "e.npy"), "--shards", str(shards)]) == 2
    assert message in capsys.readouterr().err
    single = build_index(PASSAGES, tmp_path / "single", embeddings=vectors, split=False, progress=False)
    assert main(["--split-index", single, str(tmp_path / "split"), "--shards", str(shards)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["e.npy", "kb.jsonl", "single"]  # nothing written
    with pytest.raises(ValueError, match="shards must be a positive integer"):
        split_index(single, tmp_path / "split", 1.5)

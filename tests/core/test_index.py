"""Every index kind on tiny data: custom, exact / compressed (wiki_dpr layout, local), legacy; search settings; damage."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from rag_core.index import (
    CanonicalIndex,
    CustomIndex,
    IndexFormatError,
    IndexNotFoundError,
    IndexNotInitializedError,
    LegacyIndex,
    PickleNotAllowedError,
    index_from_config,
)
from rag_core.index.canonical import INDEX_FILES
from rag_core.index.legacy import INDEX_FILE, META_NPY, META_PICKLE, PASSAGES_PICKLE, PASSAGES_TSV
from tests.harness.configs import HIDDEN, tiny_rag_config
from tests.harness.passages import PASSAGES
from tests.harness.retrieval import tiny_embeddings, tiny_index_paths, tiny_question_vectors, write_passages

N_LARGE = 300  # enough rows to train IVF-PQ


def _large():
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((N_LARGE, HIDDEN)).astype(np.float32)
    passages = [(f"T{i}", f"passage number {i}") for i in range(N_LARGE)]
    return passages, vectors


def _exact_top(queries, vectors, k):
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_custom_index_top_docs_and_doc_dicts(tiny_passages_dir):
    index = CustomIndex(HIDDEN, **{"dataset_path": tiny_index_paths(tiny_passages_dir)["passages_path"], "index_path": tiny_index_paths(tiny_passages_dir)["index_path"]})
    assert not index.is_initialized()
    with pytest.raises(IndexNotInitializedError, match="init_index"):
        index.get_top_docs(tiny_question_vectors(), 2)
    index.init_index()
    assert index.is_initialized()
    queries = tiny_question_vectors(batch_size=3, seed=11)
    doc_ids, embeds = index.get_top_docs(queries, 4)
    np.testing.assert_array_equal(doc_ids, _exact_top(queries, tiny_embeddings(), 4))
    np.testing.assert_array_equal(embeds, tiny_embeddings()[doc_ids])
    dicts = index.get_doc_dicts(np.array([[1, -1]]))
    assert dicts[0]["title"] == [PASSAGES[1][0], ""] and dicts[0]["text"] == [PASSAGES[1][1], ""]


def _wiki_dpr_folder(folder, kind):
    import faiss

    passages, vectors = _large()
    if kind == "exact":
        index = faiss.IndexHNSWSQ(HIDDEN, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 4  # deliberately low: the config setting must win
    else:
        quantizer = faiss.IndexHNSWFlat(HIDDEN, 8, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexIVFPQ(quantizer, HIDDEN, 8, 4, 4, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
    index.train(vectors)
    index.add(vectors)
    paths = write_passages(str(folder), passages, vectors, faiss_index=index)
    name = INDEX_FILES[kind][0].format(split="train")
    os.rename(paths["index_path"], os.path.join(paths["passages_path"], name))
    return paths["passages_path"], vectors


@pytest.mark.parametrize("kind", ["exact", "compressed"])
def test_canonical_index_reads_local_wiki_dpr_files_with_configured_search(tmp_path, kind):
    passages_path, vectors = _wiki_dpr_folder(tmp_path, kind)
    config = tiny_rag_config("dpr", "bart", index_name=kind, passages_path=passages_path, hnsw_ef_search=64, ivf_nprobe=8)
    index = index_from_config(config)
    assert isinstance(index, CanonicalIndex)
    index.init_index()
    if kind == "exact":
        assert index.search_parameters == {"efSearch": 64}
    else:
        assert index.search_parameters == {"efSearch": 64, "nprobe": 8}  # nprobe = every list: exhaustive over codes
    if kind == "compressed":  # 4-bit PQ codes lose neighbours; exact re-ranking of a shortlist restores them
        index = CanonicalIndex(HIDDEN, kind, dataset_path=passages_path, ivf_nprobe=8, rerank_k_factor=10)
        index.init_index()
    queries = vectors[:10] + 0.001
    doc_ids, _ = index.get_top_docs(queries, 1)
    np.testing.assert_array_equal(doc_ids[:, 0], np.arange(10))
    assert index.get_doc_dicts(doc_ids[:2])[1]["title"] == ["T1"]


def test_canonical_index_reads_parquet_shards(tmp_path):
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = tiny_embeddings()
    folder = tmp_path / "wiki_dpr" / "data"
    folder.mkdir(parents=True)
    for shard, rows in enumerate((slice(0, 7), slice(7, None))):
        table = pa.table({"id": [str(i) for i in range(len(PASSAGES))][rows], "text": [p[1] for p in PASSAGES][rows],
                          "title": [p[0] for p in PASSAGES][rows], "embeddings": vectors[rows].tolist()})
        pq.write_table(table, folder / f"train-0000{shard}-of-00002.parquet")
    flat = faiss.IndexFlatIP(HIDDEN)
    flat.add(vectors)
    faiss.write_index(flat, str(tmp_path / "wiki_dpr" / INDEX_FILES["exact"][0].format(split="train")))
    index = CanonicalIndex(HIDDEN, "exact", dataset_path=str(tmp_path / "wiki_dpr"), cache_dir=str(tmp_path / "cache"))
    index.init_index()
    doc_ids, embeds = index.get_top_docs(vectors[[2, 9]], 1)
    np.testing.assert_array_equal(doc_ids[:, 0], [2, 9])
    np.testing.assert_array_equal(embeds[:, 0], vectors[[2, 9]])
    assert index.get_doc_dicts(doc_ids)[1]["title"] == [PASSAGES[9][0]]


def test_canonical_index_never_downloads_and_names_missing_files(tmp_path):
    with pytest.raises(IndexNotFoundError, match="never downloads"):
        CanonicalIndex(HIDDEN, "exact")
    with pytest.raises(IndexNotFoundError, match="psgs_w100.nq.IVF4096_HNSW128_PQ128-IP-train.faiss"):
        CanonicalIndex(HIDDEN, "compressed", dataset_path=str(tmp_path))


def test_search_parameter_defaults_raise_faiss_low_defaults(tmp_path):
    passages_path, _ = _wiki_dpr_folder(tmp_path, "exact")
    index = CanonicalIndex(HIDDEN, "exact", dataset_path=passages_path)
    index.init_index()
    assert index.search_parameters == {"efSearch": 128}  # stored 4 < default 128
    assert index.set_search_parameters(hnsw_ef_search=32) == {"efSearch": 32}


def _legacy_folder(folder, pickled: bool):
    import faiss

    vectors = tiny_embeddings()
    phi = np.zeros((len(vectors), 1), np.float32)  # DPR's extra dimension (0 for this check)
    index = faiss.IndexHNSWSQ(HIDDEN + 1, faiss.ScalarQuantizer.QT_8bit, 8)
    full = np.hstack([vectors, phi])
    index.train(full)
    index.add(full)
    os.makedirs(folder, exist_ok=True)
    faiss.write_index(index, os.path.join(folder, INDEX_FILE))
    db_ids = np.arange(len(vectors), dtype=np.int64) + 100  # DPR ids are not row numbers
    if pickled:
        with open(os.path.join(folder, META_PICKLE), "wb") as f:
            pickle.dump([str(i) for i in db_ids], f)
        with open(os.path.join(folder, PASSAGES_PICKLE), "wb") as f:
            pickle.dump({str(i): (text, title) for i, (title, text) in zip(db_ids, PASSAGES)}, f)
    else:
        np.save(os.path.join(folder, META_NPY), db_ids)
        with open(os.path.join(folder, PASSAGES_TSV), "w", encoding="utf-8") as f:
            f.write("id\ttext\ttitle\n")
            for i, (title, text) in zip(db_ids, PASSAGES):
                f.write(f'{i}\t{text}\t"{title}"\n' if i % 2 else f"{i}\t{text}\t{title}\n")
    return str(folder)


@pytest.mark.parametrize("pickled", [False, True])
def test_legacy_index_maps_rows_to_dpr_ids(tmp_path, pickled):
    folder = _legacy_folder(tmp_path / "dpr", pickled)
    index = LegacyIndex(HIDDEN, folder, allow_pickle=pickled)
    index.init_index()
    queries = tiny_embeddings()[[3, 7]] * 2
    doc_ids, embeds = index.get_top_docs(queries, 2)
    np.testing.assert_array_equal(doc_ids[:, 0], [103, 107])
    np.testing.assert_allclose(embeds[:, 0], tiny_embeddings()[[3, 7]], atol=0.05)  # SQ8-decoded vectors
    dicts = index.get_doc_dicts(np.array([[103, 110]]))
    assert dicts[0]["title"] == [PASSAGES[3][0], PASSAGES[10][0]]
    assert dicts[0]["text"] == [PASSAGES[3][1], PASSAGES[10][1]]


def test_legacy_pickles_need_the_opt_in(tmp_path):
    folder = _legacy_folder(tmp_path / "dpr", pickled=True)
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        LegacyIndex(HIDDEN, folder)
    with pytest.raises(IndexNotFoundError, match="needs RagConfig.index_path"):
        LegacyIndex(HIDDEN, None)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious DPR file could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_legacy_pickles_are_read_as_plain_data_only(tmp_path):
    folder = _legacy_folder(tmp_path / "dpr", pickled=True)
    marker = tmp_path / "ran"
    with open(os.path.join(folder, META_PICKLE), "wb") as f:
        pickle.dump([_RunsCode(marker)], f)
    with pytest.raises(IndexFormatError, match=r"refusing to load (os|posix)\.system"):
        LegacyIndex(HIDDEN, folder, allow_pickle=True).init_index()
    assert not marker.exists()


def test_damaged_or_mismatched_files_are_refused(tmp_path, tiny_passages_dir):
    import datasets

    paths = tiny_index_paths(tiny_passages_dir)
    corrupt = tmp_path / "corrupt.faiss"
    corrupt.write_bytes(b"not a faiss index")
    index = CustomIndex(HIDDEN, paths["passages_path"], str(corrupt))
    with pytest.raises(IndexFormatError, match="not a readable faiss index"):
        index.init_index()
    assert not index.is_initialized()

    with pytest.raises(IndexFormatError, match="16-dim vectors but 8 were expected"):
        CustomIndex(8, paths["passages_path"], paths["index_path"]).init_index()

    other = write_passages(str(tmp_path / "fewer"), PASSAGES[:5], tiny_embeddings()[:5])
    with pytest.raises(IndexFormatError, match="holds 12 vectors but there are 5 passages"):
        CustomIndex(HIDDEN, other["passages_path"], paths["index_path"]).init_index()

    no_embeddings = tmp_path / "no_embeddings"
    datasets.Dataset.from_dict({"title": ["a"], "text": ["b"]}).save_to_disk(str(no_embeddings))
    with pytest.raises(IndexFormatError, match=r"missing column\(s\) \['embeddings'\]"):
        CustomIndex(HIDDEN, str(no_embeddings), paths["index_path"]).init_index()

    empty = tmp_path / "empty"
    features = datasets.Features({"title": datasets.Value("string"), "text": datasets.Value("string"), "embeddings": datasets.Sequence(datasets.Value("float32"))})
    datasets.Dataset.from_dict({"title": [], "text": [], "embeddings": []}, features=features).save_to_disk(str(empty))
    with pytest.raises(IndexFormatError, match="no passages"):
        CustomIndex(HIDDEN, str(empty), paths["index_path"]).init_index()

    not_a_dataset = tmp_path / "plain"
    not_a_dataset.mkdir()
    with pytest.raises(IndexNotFoundError, match="has no state.json"):
        CustomIndex(HIDDEN, str(not_a_dataset), paths["index_path"]).init_index()


def test_ivfpq_reranking_restores_exact_order(tmp_path):
    from rag_core.build_index import build_index

    passages, vectors = _large()
    out = build_index(passages, str(tmp_path / "kb"), embeddings=vectors, index_kind="ivfpq", split=False, progress=False)
    reranked = CustomIndex(HIDDEN, out)
    raw = CustomIndex(HIDDEN, out, rerank_k_factor=1)
    reranked.init_index()
    raw.init_index()
    assert reranked.rerank_k_factor == 40
    queries = vectors[:40] + 0.05 * np.random.default_rng(0).standard_normal((40, HIDDEN)).astype(np.float32)
    exact = _exact_top(queries, vectors, 5)
    recall = lambda ids: np.mean([len(set(a) & set(b)) for a, b in zip(ids, exact)]) / 5  # noqa: E731
    ids_reranked, _ = reranked.get_top_docs(queries, 5)
    ids_raw, _ = raw.get_top_docs(queries, 5)
    assert recall(ids_reranked) >= 0.95
    assert recall(ids_reranked) > recall(ids_raw)
    scores, _ = reranked.search(queries, 5)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first, exact scores


def _pickled_round_trip(index, queries, n_docs):
    """A pickled loaded index: nothing loaded travels, the copy loads itself on first use, same answers."""
    import copy

    expected_ids, expected_embeds = index.get_top_docs(queries, n_docs)
    data = pickle.dumps(index)
    assert len(data) < 4_000  # settings and paths, not the vectors or the passages
    clone = pickle.loads(data)
    assert not clone.is_initialized()
    doc_ids, embeds = clone.get_top_docs(queries, n_docs)
    np.testing.assert_array_equal(doc_ids, expected_ids)
    np.testing.assert_array_equal(embeds, expected_embeds)
    assert clone.get_doc_dicts(doc_ids)[0]["title"] == index.get_doc_dicts(doc_ids)[0]["title"]
    shared = copy.deepcopy(index)
    assert shared.faiss_index is index.faiss_index and shared._load_lock is not index._load_lock


def test_a_legacy_index_pickles_without_its_data(tmp_path):
    index = LegacyIndex(HIDDEN, _legacy_folder(tmp_path / "dpr", pickled=False))
    index.init_index()
    _pickled_round_trip(index, tiny_embeddings()[[3, 7]] * 2, 2)
    dicts = index.get_doc_dicts(np.array([[103, 110]]))
    assert dicts[0]["id"] == [103, 110]  # every column of DPR's TSV


@pytest.mark.parametrize("kind", ["exact", "compressed"])
def test_a_canonical_index_pickles_without_its_data(tmp_path, kind):
    passages_path, vectors = _wiki_dpr_folder(tmp_path, kind)
    index = CanonicalIndex(HIDDEN, kind, dataset_path=passages_path, hnsw_ef_search=64, ivf_nprobe=8, rerank_k_factor=4)
    index.init_index()
    _pickled_round_trip(index, vectors[:5] + 0.001, 3)
    clone = pickle.loads(pickle.dumps(index))
    clone.init_index()
    assert clone.search_parameters == index.search_parameters and clone.rerank_k_factor == 4

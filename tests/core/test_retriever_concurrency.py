"""The retriever under load: threads on a cold cache, index swaps while calls run, the byte-bounded
LRU passage cache, and the fingerprint that decides whether stored passage ids are used."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rag_core.arguments import RagInputError
from rag_core.build_index import build_index
from rag_core.contexts import ContextAssembler, PassageCache, context_string, tokenizer_fingerprint
from rag_core.index import CustomIndex
from tests.harness.configs import HIDDEN, tiny_rag_config
from tests.harness.passages import PASSAGES
from tests.harness.retrieval import (
    QUESTIONS,
    make_tiny_retriever,
    tiny_embeddings,
    tiny_index_paths,
    tiny_question_ids,
    tiny_question_vectors,
    write_passages,
)
from tests.harness.tokenizers import bart_tokenizer as new_bart_tokenizer

KEYS = ("doc_ids", "retrieved_doc_embeds", "context_input_ids", "context_attention_mask")


def _np(out) -> dict:
    return {key: np.asarray(out[key]) for key in KEYS}


def _assert_same(got: dict, want: dict, what: str = "") -> None:
    for key in KEYS:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{what} {key}")


def _same(got: dict, want: dict) -> bool:
    return all(got[k].shape == want[k].shape and np.array_equal(got[k], want[k]) for k in KEYS)


def _jobs(question_encoder_tokenizer, count: int, seed: int = 0, prefixes=(None,)) -> list[tuple]:
    """(question ids, question vectors, n_docs, prefix) per call: mixed batches, n_docs and prefixes."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        batch = 1 + i % 3
        picks = rng.choice(len(QUESTIONS), size=batch)
        near = rng.choice(len(PASSAGES), size=batch)
        vectors = tiny_question_vectors(seed=seed * 1000 + i, near=list(near))
        ids = tiny_question_ids(question_encoder_tokenizer, [QUESTIONS[p] for p in picks])
        jobs.append((ids, vectors, 1 + i % 5, prefixes[i % len(prefixes)]))
    return jobs


def _run(retriever, job) -> dict:
    ids, vectors, n_docs, prefix = job
    return _np(retriever(ids, vectors, n_docs=n_docs, prefix=prefix, return_tensors="np"))


def _fresh(passages_dir, question_encoder_tokenizer, generator_tokenizer, generator="bart", **config_kwargs):
    config = tiny_rag_config("dpr", generator, **{**tiny_index_paths(passages_dir), **config_kwargs})
    return make_tiny_retriever(config, question_encoder_tokenizer, generator_tokenizer)


# === Threads on a cold cache ===
@pytest.mark.parametrize("generator", ["bart", "t5"])
def test_threads_on_a_cold_cache_equal_a_separate_serial_retriever(
    tiny_passages_dir, question_encoder_tokenizer, generator_tokenizers, generator
):
    tokenizer = generator_tokenizers[generator]
    jobs = _jobs(question_encoder_tokenizer, 32, seed=1, prefixes=(None, "question: ", None, "answer: "))
    reference = _fresh(tiny_passages_dir, question_encoder_tokenizer, tokenizer, generator, max_combined_length=48)
    expected = [_run(reference, job) for job in jobs]

    retriever = _fresh(tiny_passages_dir, question_encoder_tokenizer, tokenizer, generator, max_combined_length=48)
    assert retriever.contexts.cache_stats()["entries"] == 0  # cold: nothing tokenized yet
    threads = 8
    start = threading.Barrier(threads)

    def worker(k: int) -> list:
        start.wait()  # every thread begins at once, on the empty cache
        return [(i, _run(retriever, jobs[i])) for i in range(k, len(jobs), threads)]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = [r for part in pool.map(worker, range(threads)) for r in part]
    assert sorted(i for i, _ in results) == list(range(len(jobs)))
    for i, got in results:
        _assert_same(got, expected[i], f"job {i}")
    stats = retriever.contexts.cache_stats()
    assert stats["misses"] > 0 and stats["entries"] > 0 and stats["bytes"] <= stats["max_bytes"]
    # and the cache the threads filled serves the same answers
    for i, job in enumerate(jobs[:6]):
        _assert_same(_run(retriever, job), expected[i], f"warm job {i}")


# === Swapping the index under load ===
@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory):
    """Index A (passage i is "A: ...") and index B (the same passages in reverse order as "B: ...",
    vectors doubled): the same question finds the same passages under other ids, other embeddings
    and other texts."""
    root = tmp_path_factory.mktemp("swap")
    embeddings = tiny_embeddings()
    order = np.arange(len(PASSAGES))[::-1]
    a = [(title, f"A: {text}") for title, text in PASSAGES]
    b = [(PASSAGES[i][0], f"B: {PASSAGES[i][1]}") for i in order]
    paths_a = write_passages(os.path.join(root, "a"), a, embeddings)
    paths_b = write_passages(os.path.join(root, "b"), b, np.ascontiguousarray(2 * embeddings[order]))
    return paths_a, paths_b


def _index(paths) -> CustomIndex:
    index = CustomIndex(HIDDEN, paths["passages_path"], paths["index_path"])
    index.init_index()
    return index


def test_swapping_the_index_under_load_never_mixes_two_indexes(two_indexes, question_encoder_tokenizer, bart_tokenizer):
    paths_a, paths_b = two_indexes
    jobs = [(ids, vectors, 3, prefix) for ids, vectors, _, prefix in _jobs(question_encoder_tokenizer, 8, seed=2)]

    def reference(paths):
        config = tiny_rag_config("dpr", "bart", max_combined_length=64, **paths)
        retriever = make_tiny_retriever(config, question_encoder_tokenizer, bart_tokenizer)
        return [_run(retriever, job) for job in jobs]

    want_a, want_b = reference(paths_a), reference(paths_b)
    for a, b in zip(want_a, want_b):  # the two indexes really differ in ids, embeddings and passages
        assert not np.array_equal(a["doc_ids"], b["doc_ids"])
        assert not np.array_equal(a["retrieved_doc_embeds"], b["retrieved_doc_embeds"])
        assert not np.array_equal(a["context_input_ids"], b["context_input_ids"])

    index_a, index_b = _index(paths_a), _index(paths_b)
    for index in (index_a, index_b):  # a wider window between the search and the passage reads
        search = index.get_top_docs
        index.get_top_docs = lambda *args, _search=search: (time.sleep(0.002), _search(*args))[1]
    config = tiny_rag_config("dpr", "bart", max_combined_length=64, **paths_a)
    retriever = make_tiny_retriever(config, question_encoder_tokenizer, bart_tokenizer, init_retrieval=False)
    retriever.index = index_a

    epoch, stop, records, errors = [0], threading.Event(), [], []

    def worker(k: int) -> None:
        i = k
        try:
            while not stop.is_set():
                started = epoch[0]
                out = _run(retriever, jobs[i % len(jobs)])
                records.append((started, epoch[0], i % len(jobs), out))
                i += 1
        except Exception as err:  # surfaced below
            errors.append(err)

    swaps = 41  # odd: the last swap installs B
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for k in range(swaps):
        time.sleep(0.006)
        retriever.index = index_b if k % 2 == 0 else index_a
        epoch[0] += 1
    deadline = time.monotonic() + 20  # let a few calls start after the last swap
    while sum(r[0] == swaps for r in list(records)) < 8 and time.monotonic() < deadline and not errors:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors

    counts = {"A": 0, "B": 0, "spanning": 0, "after": 0}
    for started, ended, j, out in records:
        is_a, is_b = _same(out, want_a[j]), _same(out, want_b[j])
        assert is_a or is_b, f"a call (job {j}) mixed the two indexes: {out['doc_ids'].tolist()}"
        counts["A" if is_a else "B"] += 1
        counts["spanning"] += ended != started
        if started == swaps:  # began after the last swap: only B
            assert is_b, f"a call that began after the swap to B returned index A's passages (job {j})"
            counts["after"] += 1
    # the race was exercised: both indexes served calls, calls overlapped swaps, some began after the last
    assert counts["A"] and counts["B"] and counts["spanning"] and counts["after"], counts
    # nothing of A was left in the cache: every answer now is B's, cached or not
    for j, job in enumerate(jobs):
        _assert_same(_run(retriever, job), want_b[j], f"after the swaps, job {j}")


def test_a_call_that_started_on_the_old_index_neither_reads_nor_fills_the_new_cache(
    two_indexes, question_encoder_tokenizer, bart_tokenizer
):
    """Deterministic version of the race: the swap happens between a call's search and its passage reads."""
    paths_a, paths_b = two_indexes
    index_a, index_b = _index(paths_a), _index(paths_b)
    config = tiny_rag_config("dpr", "bart", max_combined_length=64, **paths_a)
    retriever = make_tiny_retriever(config, question_encoder_tokenizer, bart_tokenizer, init_retrieval=False)
    retriever.index = index_a
    job = _jobs(question_encoder_tokenizer, 1, seed=3)[0]
    reference_a = make_tiny_retriever(config, question_encoder_tokenizer, bart_tokenizer)
    want_a = _run(reference_a, job)

    search = index_a.get_top_docs

    def search_then_swap(*args):
        found = search(*args)
        retriever.index = index_b  # another thread swaps right after this call searched A
        return found

    index_a.get_top_docs = search_then_swap
    got = _run(retriever, job)
    _assert_same(got, want_a, "the call that began on A")  # A's ids, embeddings and passages
    assert retriever.contexts.cache_stats()["entries"] == 0  # A's passages did not enter B's cache
    config_b = tiny_rag_config("dpr", "bart", max_combined_length=64, **paths_b)
    want_b = _run(make_tiny_retriever(config_b, question_encoder_tokenizer, bart_tokenizer), job)
    _assert_same(_run(retriever, job), want_b, "the next call, on B")


# === The byte-bounded LRU cache ===
def _fetcher(log: list):
    def fetch(ids):
        log.extend(int(i) for i in ids)
        return [PASSAGES[i][0] for i in ids], [PASSAGES[i][1] for i in ids]

    return fetch


def _piece_bytes(assembler, docs) -> list[int]:
    pieces = assembler.encode_passages([PASSAGES[d][0] for d in docs], [PASSAGES[d][1] for d in docs], None)
    return [PassageCache.entry_bytes(p) for p in pieces]


def test_lru_keeps_the_recently_used_and_evicts_the_oldest(question_encoder_tokenizer, bart_tokenizer):
    probe = ContextAssembler(question_encoder_tokenizer, bart_tokenizer, " / ", " // ", 64)
    sizes = dict(zip(range(4), _piece_bytes(probe, range(4))))
    budget = sizes[0] + sizes[1] + sizes[2] + min(sizes.values()) - 1  # any three of the first four fit, never four
    assert all(sum(sizes.values()) - sizes[left_out] <= budget for left_out in range(4))
    assembler = ContextAssembler(question_encoder_tokenizer, bart_tokenizer, " / ", " // ", 64, cache_bytes=budget)
    fetched: list = []
    fetch = _fetcher(fetched)

    def use(*docs):
        pieces = assembler.cached_passages(np.array([docs]), None, fetch)
        stats = assembler.cache_stats()
        assert stats["bytes"] <= budget, stats
        return pieces

    use(0, 1, 2)  # three misses, all stored
    use(0)  # a hit: 0 is now the most recently used, 1 the least
    use(3)  # a miss: 1 goes
    assert fetched == [0, 1, 2, 3]
    stats = assembler.cache_stats()
    assert (stats["hits"], stats["misses"], stats["evictions"], stats["entries"]) == (1, 4, 1, 3)
    assert stats["bytes"] == sizes[0] + sizes[2] + sizes[3]
    use(0, 2, 3)  # all still there
    assert fetched == [0, 1, 2, 3]
    use(1)  # evicted earlier: read again, and now 0 (least recently used) goes
    assert fetched == [0, 1, 2, 3, 1]
    use(2, 3, 1)
    assert fetched == [0, 1, 2, 3, 1]
    use(0)
    assert fetched == [0, 1, 2, 3, 1, 0]
    stats = assembler.cache_stats()
    assert (stats["hits"], stats["misses"], stats["evictions"]) == (7, 6, 3)


def test_many_prefixes_share_one_budget(tiny_passages_dir, question_encoder_tokenizer, bart_tokenizer):
    retriever = _fresh(tiny_passages_dir, question_encoder_tokenizer, bart_tokenizer, max_combined_length=64)
    reference = _fresh(tiny_passages_dir, question_encoder_tokenizer, bart_tokenizer, max_combined_length=64)
    budget = sum(_piece_bytes(retriever.contexts, range(len(PASSAGES)))) // 2  # half of one prefix's passages
    retriever.contexts.cache_bytes = budget
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS)
    vectors = tiny_question_vectors(4, seed=5)
    for k in range(40):
        prefix = f"p{k}: "
        out = _np(retriever(question_ids, vectors, n_docs=len(PASSAGES) // 2, prefix=prefix, return_tensors="np"))
        stats = retriever.contexts.cache_stats()
        assert 0 < stats["bytes"] <= budget, stats
        if k % 13 == 0:
            _assert_same(out, _np(reference(question_ids, vectors, n_docs=len(PASSAGES) // 2, prefix=prefix, return_tensors="np")))
    assert stats["evictions"] > 0 and stats["misses"] >= 40 * len(PASSAGES) // 2
    retriever.contexts.cache_bytes = budget // 4  # lowering the budget evicts at once
    assert retriever.contexts.cache_stats()["bytes"] <= budget // 4


def test_cache_limits_entries_too_and_refuses_bad_budgets(question_encoder_tokenizer, bart_tokenizer):
    assembler = ContextAssembler(question_encoder_tokenizer, bart_tokenizer, " / ", " // ", 64, cache_size=2)
    fetched: list = []
    pieces = assembler.cached_passages(np.array([[0, 1, 2, 3]]), None, _fetcher(fetched))
    assert len(pieces) == 4 and assembler.cache_stats()["entries"] == 2  # the old entry-count cap still holds
    assembler.cached_passages(np.array([[2, 3]]), None, _fetcher(fetched))
    assert fetched == [0, 1, 2, 3]  # the two most recent stayed

    tiny = ContextAssembler(question_encoder_tokenizer, bart_tokenizer, " / ", " // ", 64, cache_bytes=10)
    first = tiny.cached_passages(np.array([[4]]), None, _fetcher(fetched))
    second = tiny.cached_passages(np.array([[4]]), None, _fetcher(fetched))
    np.testing.assert_array_equal(first[0][0], second[0][0])  # too big for the budget: served, not stored
    assert fetched[-2:] == [4, 4] and tiny.cache_stats()["bytes"] == 0
    for bad in (-1, 1.5, "1GB", True):
        with pytest.raises(RagInputError, match="cache_bytes must be a non-negative integer"):
            ContextAssembler(question_encoder_tokenizer, bart_tokenizer, " / ", " // ", 64, cache_bytes=bad)


def test_an_old_generation_neither_reads_nor_writes():
    cache = PassageCache(max_bytes=1 << 20)
    old = cache.generation
    piece = (np.arange(4, dtype=np.int64), None)
    cache.put_many([((None, 1), piece)], old)
    assert cache.get_many([(None, 1)], old).keys() == {(None, 1)}
    new = cache.clear()
    assert new != old and cache.get_many([(None, 1)], new) == {}
    cache.put_many([((None, 2), piece)], old)  # a call that began before the clear
    assert len(cache) == 0 and cache.get_many([(None, 2)], new) == {}
    cache.put_many([((None, 2), piece)], new)
    assert cache.get_many([(None, 2)], old) == {} and cache.get_many([(None, 2)], new).keys() == {(None, 2)}
    view = np.arange(100, dtype=np.int64)[10:14]
    cache.put_many([((None, 3), (view, None))], new)
    stored = cache.get_many([(None, 3)], new)[(None, 3)][0]
    assert stored.base is None and stored.nbytes == view.nbytes  # a view is stored as a copy
    np.testing.assert_array_equal(stored, view)


# === The stored-ids fingerprint ===
@pytest.fixture(scope="module")
def stored_kb(tmp_path_factory):
    """The harness passages built with stored generator ids (a fresh BART tokenizer of the harness definition)."""
    out = build_index(
        PASSAGES, tmp_path_factory.mktemp("stored") / "kb", embeddings=tiny_embeddings(), split=False,
        progress=False, generator_tokenizer=new_bart_tokenizer(),
    )
    return out


def _counting(retriever) -> list:
    fetched: list = []
    original = retriever._fetch
    retriever._fetch = lambda ids, *index: fetched.extend(ids.tolist()) or original(ids, *index)
    return fetched


def test_truncation_and_padding_do_not_change_the_fingerprint(question_encoder_tokenizer):
    tokenizer = new_bart_tokenizer()
    before = tokenizer_fingerprint(tokenizer)
    tokenizer("some passage text that runs long", truncation=True, max_length=3)
    assert tokenizer_fingerprint(tokenizer) == before
    tokenizer(["a", "b c d"], padding="longest")
    assert tokenizer_fingerprint(tokenizer) == before
    assert tokenizer_fingerprint(new_bart_tokenizer()) == before  # another instance, same definition
    a = ContextAssembler(question_encoder_tokenizer, tokenizer, " / ", " // ", 64).piece_fingerprint
    b = ContextAssembler(question_encoder_tokenizer, tokenizer, " | ", " // ", 64).piece_fingerprint
    assert a != b  # title_sep is part of a passage piece
    tokenizer.add_tokens(["Germany"])
    assert tokenizer_fingerprint(tokenizer) != before


def test_stored_ids_stay_in_use_after_truncating_calls_and_stop_after_a_tokenizer_change(
    stored_kb, question_encoder_tokenizer
):
    tokenizer = new_bart_tokenizer()
    config = tiny_rag_config("dpr", "bart", passages_path=stored_kb, max_combined_length=64)
    retriever = make_tiny_retriever(config, question_encoder_tokenizer, tokenizer)
    fetched = _counting(retriever)
    # the generator tokenizer was just used with truncation (by the user, or a fallback row)
    tokenizer("a long text to truncate", truncation=True, max_length=4)
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])
    vectors = tiny_question_vectors(near=[2, 1])
    n_docs = len(PASSAGES)
    first = _np(retriever(question_ids, vectors, n_docs=n_docs, return_tensors="np"))
    assert fetched == []  # every passage came from the stored ids
    assert retriever.contexts.piece_fingerprint == retriever.index.stored_ids_fingerprint()
    tokenizer(["x", "y z"], truncation=True, max_length=2, padding=True)
    retriever.contexts.clear_cache()
    again = _np(retriever(question_ids, vectors, n_docs=n_docs, return_tensors="np"))
    assert fetched == []
    _assert_same(again, first)

    tokenizer.add_tokens(["Germany"])  # a real change: "Germany" is now one token
    changed = _np(retriever(question_ids, vectors, n_docs=n_docs, return_tensors="np"))
    assert sorted(fetched) == list(range(len(PASSAGES)))  # stored ids unused, cached pieces dropped
    assert retriever.contexts.piece_fingerprint != retriever.index.stored_ids_fingerprint()
    questions = question_encoder_tokenizer.batch_decode(question_ids, skip_special_tokens=True)
    germany = tokenizer.convert_tokens_to_ids("Germany")
    rows = []
    for q, doc_ids in enumerate(changed["doc_ids"]):
        for d in doc_ids:
            string = context_string(*PASSAGES[d], questions[q], None, " / ", " // ")
            rows.append(tokenizer(string, truncation=True, max_length=64)["input_ids"])
    got = [row[m == 1].tolist() for row, m in zip(changed["context_input_ids"], changed["context_attention_mask"])]
    assert got == rows  # the changed tokenizer's ids, the added token included
    assert any(germany in row for row in got) and not any(germany in row for row in first["context_input_ids"].tolist())

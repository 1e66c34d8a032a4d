"""Retrieval benchmark: ours vs transformers' RagRetriever, and the index kinds of `build_index`.

Part 1 (`call`): both retrievers on the same passages and vectors (a `custom` index: passages saved
with `datasets`, a flat inner-product faiss file), the same questions, in one process: median seconds
per `__call__` after warm-up, and the ratio. "cold" batches retrieve passages not seen before (our
passage-token cache misses), "warm" batches repeat (our cache hits; the original has no such cache).
Like for like (the headline): ours reads the same index folder as the original and tokenizes the
retrieved passages at call time. Information: ours on a second folder built with
`build_index(generator_tokenizer=...)`, whose passages were tokenized at build time (untimed there; the
build-time cost is measured as the difference of the two builds and also shown amortized per call).

Part 2 (`kinds`): for N synthetic vectors (clustered, like real embeddings; uniform random
vectors have no neighbourhood structure for any approximate index to exploit), each index kind:
build seconds, queries/s (batches of `--batch`, through `CustomIndex.get_top_docs`, re-ranking
included), recall@n_docs against flat search, and memory (bytes of the serialised faiss index;
`ivfpq` re-ranks from the memory-mapped embeddings on disk, which are not counted).

    python -m benchmarks.bench_retriever            # full size (20k passages, 200k vectors)
    python -m benchmarks.bench_retriever --quick    # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _corpus_passages(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n passages of ~60-100 words drawn from Python's own language reference (no download)."""
    from pydoc_data.topics import topics

    words = " ".join(topics.values()).split()
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(words) - 120, size=n)
    lengths = rng.integers(60, 100, size=n)
    return [(f"Topic {i}", " ".join(words[s : s + k])) for i, (s, k) in enumerate(zip(starts, lengths))]


def _interleaved_medians(fns: dict, batches: dict, warmup: int) -> dict:
    """Median seconds per call of each `fns[name](*batch)` over `batches[name]` (lists of equal length):
    the first `warmup` untimed, then the functions take turns on each batch (the order rotating), so that
    a change of the machine's load weighs on all of them alike."""
    names = list(fns)
    times = {name: [] for name in names}
    for i in range(len(batches[names[0]])):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            start = time.perf_counter()
            fns[name](*batches[name][i])
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_call(n_passages: int = 20_000, dim: int = 768, batch: int = 8, n_docs: int = 5, repeats: int = 20, warmup: int = 3,
               index_kind: str = "flat") -> dict:
    """Both retrievers' `__call__` on the same passages and vectors (see the module docstring).

    Two index folders hold the same passages and vectors: "plain" (what the original reads, and what ours
    reads in the like-for-like case: ours tokenizes each retrieved passage at call time, then caches it),
    and "stored" (built with `generator_tokenizer=`: the passages' generator ids stored beside them at
    build time, which ours reads instead of tokenizing). The build-time tokenizing cost is measured as
    the difference of the two builds and reported per passage."""
    from transformers import RagConfig as HFRagConfig
    from transformers import RagRetriever as HFRagRetriever

    from benchmarks.common import RetrievalLog
    from rag_core import RagRetriever
    from rag_core.build_index import build_index
    from tests.harness.configs import tiny_rag_config
    from tests.harness.tokenizers import bart_tokenizer, question_encoder_tokenizer

    rng = np.random.default_rng(0)
    passages = _corpus_passages(n_passages)
    vectors = rng.standard_normal((n_passages, dim)).astype(np.float32)
    q_tok, g_tok = question_encoder_tokenizer(), bart_tokenizer()
    questions = ["what does the with statement do?", "how are exceptions raised?", "what is a generator function?",
                 "how does import work?", "what is the global statement?", "which methods define comparison?",
                 "what is a coroutine?", "how is a class created?"]
    with tempfile.TemporaryDirectory() as folder:
        built = {}
        for name, kwargs in (("plain", {}), ("stored", {"generator_tokenizer": g_tok})):
            start = time.perf_counter()
            out = build_index(passages, os.path.join(folder, name), embeddings=vectors, split=False, progress=False,
                              index_kind=index_kind, ef_construction=64, **kwargs)
            built[name] = (out, time.perf_counter() - start)

        def config_for(name):
            out = built[name][0]
            return tiny_rag_config("dpr", "bart", retrieval_vector_size=dim, retrieval_batch_size=batch, n_docs=n_docs,
                                   max_combined_length=300, passages_path=os.path.join(out, "passages"),
                                   index_path=os.path.join(out, "index.faiss"))

        plain_config = config_for("plain")
        ours = RagRetriever(plain_config, q_tok, g_tok)  # like for like: the original's index folder
        ours_stored = RagRetriever(config_for("stored"), q_tok, g_tok)
        ours_warm = RagRetriever(config_for("stored"), q_tok, g_tok)
        theirs = HFRagRetriever(HFRagConfig(**plain_config.to_dict()), q_tok, g_tok)
        question_ids = q_tok([questions[i % len(questions)] for i in range(batch)], padding=True, return_tensors="np")["input_ids"]
        cold = [(question_ids, rng.standard_normal((batch, dim)).astype(np.float32)) for _ in range(warmup + repeats)]
        warm = cold[:warmup] + [cold[i % warmup] for i in range(repeats)]  # timed calls repeat the warm-up's

        # the same outputs (theirs padded to max_combined_length): checked once before timing
        b = theirs(*cold[0], return_tensors="np")
        for mine in (ours, ours_stored):
            a = mine(*cold[0], return_tensors="np")
            assert np.array_equal(a["doc_ids"], b["doc_ids"])
            for row in range(len(a["context_input_ids"])):
                assert a["context_input_ids"][row][a["context_attention_mask"][row] == 1].tolist() == \
                    b["context_input_ids"][row][b["context_attention_mask"][row] == 1].tolist()
        stored_used = _uses_stored_ids(ours), _uses_stored_ids(ours_stored)

        result = {"passages": n_passages, "dim": dim, "batch": batch, "n_docs": n_docs, "index_kind": index_kind,
                  "build_plain_s": built["plain"][1], "build_stored_s": built["stored"][1],
                  "stored_ids_used": {"like_for_like": stored_used[0], "stored": stored_used[1]}}
        result["build_tokenizing_s"] = max(0.0, built["stored"][1] - built["plain"][1])
        per_call = batch * n_docs
        result["build_tokenizing_per_call_s"] = result["build_tokenizing_s"] / n_passages * per_call
        # the faiss search both retrievers make (the same call on the same file): not ours to speed up
        search = ours.index.faiss_index.search
        logs = {}
        for name, retriever in (("tokenizing_cold", ours), ("cold", ours_stored), ("warm", ours_warm)):
            retriever.contexts.clear_cache()
            logs[name] = RetrievalLog(retriever)
        fns = {"faiss_search": lambda q, v: search(v, n_docs),
               "theirs": lambda q, v: theirs(q, v, return_tensors="np"),
               "tokenizing_cold": lambda q, v: ours(q, v, return_tensors="np"),
               "cold": lambda q, v: ours_stored(q, v, return_tensors="np"),
               "warm": lambda q, v: ours_warm(q, v, return_tensors="np")}
        medians = _interleaved_medians(fns, {name: warm if name == "warm" else cold for name in fns}, warmup)
        result["faiss_search_s"], result["theirs_s"] = medians["faiss_search"], medians["theirs"]
        for name in ("tokenizing_cold", "cold", "warm"):
            stats = logs[name].since(warmup)  # the timed calls; the warm-up's passages count as seen
            result[f"ours_{name}_s"] = medians[name]
            result[f"hit_rate_{name}"] = stats.get("hit_rate")
        result["ours_padded_mean"] = logs["tokenizing_cold"].since(warmup).get("padded_mean")
        result["ours_amortized_cold_s"] = result["ours_cold_s"] + result["build_tokenizing_per_call_s"]
        for key in ("tokenizing_cold", "cold", "warm", "amortized_cold"):
            result[f"ratio_{key}"] = result["theirs_s"] / result[f"ours_{key}_s"]
        overhead = lambda t: max(t - result["faiss_search_s"], 1e-6)  # noqa: E731
        result["ratio_tokenizing_cold_excluding_search"] = overhead(result["theirs_s"]) / overhead(result["ours_tokenizing_cold_s"])
        result["ratio_cold_excluding_search"] = overhead(result["theirs_s"]) / overhead(result["ours_cold_s"])
    return result


def _uses_stored_ids(retriever):
    """Whether the retriever reads build-time ids (True / False), or None when this cannot be told."""
    try:
        index, contexts, _ = retriever._snapshot()
        return retriever._stored_ids_reader(index, contexts) is not None
    except (AttributeError, TypeError, ValueError):
        try:
            return retriever._stored_ids_reader() is not None
        except (AttributeError, TypeError):
            return None


def _clustered(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 200), dim)).astype(np.float32)
    data = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    picks = rng.choice(n, n_queries, replace=False)
    queries = data[picks] + 0.3 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return data, queries


def bench_kinds(n_vectors: int = 200_000, dim: int = 768, n_queries: int = 1000, batch: int = 8, n_docs: int = 5,
                kinds: tuple = ("flat", "hnsw", "hnsw_sq8", "ivfpq"), ef_construction: int = 200, ivf_nprobe: int = 16,
                search_threads: int = 1) -> dict:
    import faiss

    from rag_core.build_index import _passages_dataset, make_faiss_index
    from rag_core.index import CustomIndex

    build_threads = os.cpu_count() or 1
    data, queries = _clustered(n_vectors, dim, n_queries)
    dataset = _passages_dataset([("", "")] * n_vectors, data)
    truth = None
    results = {}
    for kind in kinds:
        faiss.omp_set_num_threads(build_threads)
        start = time.perf_counter()
        index = make_faiss_index(data, kind, ef_construction=ef_construction)
        build_s = time.perf_counter() - start
        faiss.omp_set_num_threads(search_threads)
        custom = CustomIndex.from_dataset(dataset, dim, faiss_index=index, ivf_nprobe=ivf_nprobe,
                                          rerank_k_factor=40 if kind == "ivfpq" else None)
        found = []
        start = time.perf_counter()
        for i in range(0, n_queries, batch):
            found.append(custom.get_top_docs(queries[i : i + batch], n_docs)[0])
        seconds = time.perf_counter() - start
        found = np.concatenate(found)
        if kind == "flat":
            truth = found
        recall = None if truth is None else float(np.mean([len(set(a) & set(b)) / n_docs for a, b in zip(found, truth)]))
        results[kind] = {
            "build_s": round(build_s, 2),
            "queries_per_s": round(n_queries / seconds, 1),
            f"recall@{n_docs}": recall,
            "memory_bytes": int(faiss.serialize_index(index).size),
            "search": {**custom.search_parameters, "rerank_k_factor": custom.rerank_k_factor or 1},
        }
        print(f"  {kind}: {results[kind]}", file=sys.stderr, flush=True)
    flat = results.get("flat")
    if flat:
        for kind, r in results.items():
            r["memory_vs_flat"] = round(r["memory_bytes"] / flat["memory_bytes"], 4)
            r["speed_vs_flat"] = round(r["queries_per_s"] / flat["queries_per_s"], 2)
    return {"vectors": n_vectors, "dim": dim, "queries": n_queries, "batch": batch, "ef_construction": ef_construction,
            "build_threads": build_threads, "search_threads": search_threads, "kinds": results}


def run(quick: bool = False, threads: int = 1, **sizes) -> dict:
    """All numbers as a dict (for `make bench`); `quick` shrinks every size.

    `threads`: faiss' OpenMP threads for both retrievers (1 by default: with batches of 8, OpenMP
    mostly adds spin-waiting, badly so on a shared machine; measured 0.2 ms vs 22 ms per search).
    """
    import faiss

    faiss.omp_set_num_threads(threads)
    if quick:
        call = dict(n_passages=2000, dim=128, repeats=8)
        kinds = dict(n_vectors=20_000, dim=128, n_queries=200)
    else:
        call = dict(n_passages=20_000, dim=768, repeats=20)
        kinds = dict(n_vectors=200_000, dim=768, n_queries=1000)
    call.update({k: v for k, v in sizes.items() if k in ("n_passages", "repeats") and v is not None})
    kinds.update({k: v for k, v in sizes.items() if k in ("n_vectors", "n_queries") and v is not None})
    if sizes.get("dim"):
        call["dim"] = kinds["dim"] = sizes["dim"]
    out = {}
    if sizes.get("part") in (None, "call"):
        out["call"] = bench_call(**call)
        print(f"  call: {out['call']}", file=sys.stderr, flush=True)
        if sizes.get("hnsw"):
            out["call_hnsw"] = bench_call(index_kind="hnsw", **call)  # a search that does not dominate the call
            print(f"  call_hnsw: {out['call_hnsw']}", file=sys.stderr, flush=True)
    if sizes.get("part") in (None, "kinds"):
        if sizes.get("ef_construction"):
            kinds["ef_construction"] = sizes["ef_construction"]
        out["kinds"] = bench_kinds(search_threads=threads, **kinds)
    out["faiss_threads"] = threads
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("call", "kinds"), default=None)
    parser.add_argument("--passages", type=int, dest="n_passages")
    parser.add_argument("--vectors", type=int, dest="n_vectors")
    parser.add_argument("--queries", type=int, dest="n_queries")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads for searching")
    parser.add_argument("--ef-construction", type=int, default=None)
    parser.add_argument("--hnsw", action="store_true", help="also time __call__ on an HNSW index")
    args = parser.parse_args(argv)
    result = run(args.quick, threads=args.threads, n_passages=args.n_passages, n_vectors=args.n_vectors, n_queries=args.n_queries,
                 dim=args.dim, repeats=args.repeats, part=args.part,
                 ef_construction=args.ef_construction, hnsw=args.hnsw)
    for key in ("call", "call_hnsw"):
        if key not in result:
            continue
        c = result[key]
        print(f"__call__ ({c['passages']} passages, {c['dim']}-dim, {c['index_kind']} index, batch {c['batch']}, "
              f"n_docs {c['n_docs']}; faiss search alone {c['faiss_search_s'] * 1e3:.2f} ms): "
              f"transformers {c['theirs_s'] * 1e3:.2f} ms; like for like (ours tokenizing) "
              f"{c['ours_tokenizing_cold_s'] * 1e3:.2f} ms cold -> {c['ratio_tokenizing_cold']:.2f}x "
              f"({c['ratio_tokenizing_cold_excluding_search']:.2f}x excluding the shared search); "
              f"ours with stored ids {c['ours_cold_s'] * 1e3:.2f} ms cold / {c['ours_warm_s'] * 1e3:.2f} ms warm -> "
              f"{c['ratio_cold']:.2f}x cold, {c['ratio_warm']:.2f}x warm; build-time tokenizing "
              f"{c['build_tokenizing_s']:.1f} s = {c['build_tokenizing_per_call_s'] * 1e3:.2f} ms per call's passages "
              f"-> {c['ratio_amortized_cold']:.2f}x amortized")
    if "kinds" in result:
        k = result["kinds"]
        print(f"index kinds ({k['vectors']} x {k['dim']}-dim clustered vectors, batches of {k['batch']}):")
        print(f"{'kind':10} {'build s':>8} {'q/s':>9} {'x flat':>7} {'recall':>7} {'MiB':>8} {'x flat':>7}")
        for kind, r in k["kinds"].items():
            recall = next(v for key, v in r.items() if key.startswith("recall"))
            print(f"{kind:10} {r['build_s']:8.1f} {r['queries_per_s']:9.0f} {r.get('speed_vs_flat', 0):7.2f} "
                  f"{recall:7.3f} {r['memory_bytes'] / 2**20:8.1f} {r.get('memory_vs_flat', 0):7.3f}")
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())

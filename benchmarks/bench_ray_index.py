"""Serving an index with Ray: shards and replicas against the same index in process, plus wiki_dpr sizing.

One flat (exact) index of N synthetic vectors (default 1,000,000 x 768, clustered like real
embeddings, short synthetic passages) is built once with the library's builder and cached under
`benchmarks/_work/indexes/`, with 2- and 4-shard copies made by `rag_core.build_shards.split_index`.
In one process, on the same questions:

- in process: `CustomIndex(dim, folder).init_index()`, then `get_top_docs` + `get_passages`;
- Ray: `RayIndexService.start(folder, replicas=R, num_cpus=1)` for 2 flat shards, 4 flat shards and
  2 replicas of the single index, then, like `RagRetriever` does per call, `index.pinned()` with
  `get_top_docs` + `get_passages` on that view (the passages come back with the search).

Each Ray layout is timed interleaved with the in-process index (the two take turns on every batch),
at batch 8 and 64, with sequential calls and with several client threads; latency p50 / p99 per
call, queries/s, and their ratio to in-process. Overhead of a call = Ray p50 - in-process p50, on
the big index (where the search dominates) and on a 2,000-passage index of the same layout (where
it is all there is). Memory: every actor's peak RSS (`service.status()`) against 1/S of the
single index (the in-process RSS it added, its faiss file, and one actor holding all of it); a
1,000-passage service gives the RSS of an actor without a big index. Load: service start to
ready against `init_index`.

The sizing table for wiki_dpr (`wiki_dpr_sizing`) is computed on paper from the index layouts
(see its docstring) and its flat row is checked against the measured bytes per vector.

    python -m benchmarks.bench_ray_index                    # 1,000,000 x 768 (builds ~19 GB of cache once)
    python -m benchmarks.bench_ray_index --passages 100000  # smaller
    python -m benchmarks.run_all --only ray --ray-passages 200000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Optional

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

N_PASSAGES, QUICK_N_PASSAGES, DIM = 1_000_000, 100_000, 768
N_DOCS = 5
BATCHES = (8, 64)
LAYOUTS = (  # (label, shards, replicas)
    ("2 flat shards", 2, 1),
    ("4 flat shards", 4, 1),
    ("2 replicas of the single index", 1, 2),
)
RAY_CPUS = 8  # logical CPUs of the local Ray cluster: 4 shards of 1 CPU each fit beside the directory actor
ACTOR_CPUS = 1  # each actor's reservation, and so its faiss threads
IN_PROCESS_THREADS = 2  # faiss threads of the in-process index: the machine's cores
CLIENTS = 4  # client threads of the concurrent runs
OVERHEAD_PASSAGES, BASELINE_PASSAGES = 2_000, 1_000
TARGET_MEMORY = 1.1  # an actor's memory <= 1.1 x 1/S of the single index
TARGET_QPS = 0.8  # 2 flat shards >= 0.8 x in-process queries/s at batch 64
TARGET_OVERHEAD_MS = 5.0  # Ray p50 - in-process p50 at batch 8
# How long the client waits for one actor's answer: a flat search over 1,000,000 vectors with 4 clients
# on 2 loaded cores legitimately takes minutes, and a timeout resubmits the call to the other replica
CLIENT_TIMEOUT_S = 900.0


def _default_work_dir() -> str:
    from .common import WORK_DIR

    return os.path.join(WORK_DIR, "indexes")


# === Building (once; cached) ===
def single_folder(work_dir: str, n: int, dim: int, seed: int = 0) -> str:
    """The flat index folder of `n` synthetic passages (named as `common.cached_index` names it)."""
    return os.path.join(work_dir, f"flat-{n}x{dim}-seed{seed}")


def shards_folder(work_dir: str, n: int, dim: int, shards: int, seed: int = 0) -> str:
    return single_folder(work_dir, n, dim, seed) + f"-shards{shards}"


def build_folders(work_dir: str, n: int, dim: int, shards=(2, 4), seed: int = 0) -> dict:
    """Build what is missing: the single flat folder and its `shards` splits; facts of each (cached in <folder>.json)."""
    from rag_core.build_index import build_index
    from rag_core.build_shards import split_index

    from .common import synthetic_passages, synthetic_vectors

    os.makedirs(work_dir, exist_ok=True)
    facts = {}
    single = single_folder(work_dir, n, dim, seed)
    wanted = [(single, None)] + [(shards_folder(work_dir, n, dim, s, seed), s) for s in shards]
    for folder, s in wanted:
        facts_path = folder + ".json"
        if os.path.isdir(folder) and os.path.isfile(facts_path):
            with open(facts_path, encoding="utf-8") as f:
                facts[folder] = json.load(f)
            continue
        print(f"[ray] building {folder} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        if s is None:
            vectors = synthetic_vectors(n, dim, seed)
            build_index(synthetic_passages(n), folder, embeddings=vectors, index_kind="flat", split=False,
                        overwrite=True, progress=False)
            del vectors
        else:
            split_index(single, folder, s, overwrite=True, progress=False)
        facts[folder] = {"kind": "flat", "n": n, "dim": dim, "shards": s, "build_s": time.perf_counter() - started,
                         "disk_mib": _folder_bytes(folder) / 2**20, "build_kwargs": {}}
        with open(facts_path, "w", encoding="utf-8") as f:
            json.dump(facts[folder], f)
    return facts


def _folder_bytes(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total


def build_in_subprocess(work_dir: str, n: int, dim: int, shards=(2, 4), timeout_s: float = 3600) -> dict:
    """`build_folders` in a fresh interpreter, so that the building's memory (vectors, copies) never
    counts in this process' RSS, against which the in-process index is measured."""
    code = ("import json, sys; from benchmarks.bench_ray_index import build_folders; "
            f"print('BUILT ' + json.dumps(build_folders({work_dir!r}, {n}, {dim}, {tuple(shards)!r})))")
    env = dict(os.environ, PYTHONPATH=ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("BUILT "):
            return json.loads(line[len("BUILT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"building the indexes failed (exit {proc.returncode}): {' / '.join(tail)}")


# === Questions, timing ===
def questions(n: int, dim: int, seed: int = 0, n_clusters: int = 1000) -> np.ndarray:
    """`n` questions near the stored passages: the centres of `common.synthetic_vectors(seed=seed)`
    (the same first draw of its generator) plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    picks = np.random.default_rng(seed + 1)
    noise = 0.5 * picks.standard_normal((n, dim), dtype=np.float32)
    return centres[picks.integers(0, n_clusters, n)] + noise


class QuestionPool:
    """Batches of questions in turn (a call never sees the batch of the call before it)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors, self.at = vectors, 0

    def take(self, batch: int) -> np.ndarray:
        if self.at + batch > len(self.vectors):
            self.at = 0
        out = self.vectors[self.at : self.at + batch]
        self.at += batch
        return np.ascontiguousarray(out)


def percentile(values, p: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 calls is their maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _summary(times: list, batch: int, wall_s: Optional[float] = None) -> dict:
    wall = wall_s if wall_s is not None else sum(times)
    return {"calls": len(times), "p50_s": statistics.median(times), "p99_s": percentile(times, 99),
            "mean_s": sum(times) / len(times), "queries_per_s": batch * len(times) / wall, "wall_s": wall}


def retrieve_in_process(index, n_docs: int = N_DOCS):
    """What a retriever call asks of an in-process index: top-k ids and vectors, then the hits' passages."""
    def call(q):
        ids, embeds = index.get_top_docs(q, n_docs)
        titles, texts = index.get_passages(ids.reshape(-1))
        return ids, embeds, titles
    return call


def retrieve_ray(client, n_docs: int = N_DOCS):
    """The same through a `RayIndex`, pinned to one version per call as `RagRetriever` does (the
    passages arrive with the search: `get_passages` makes no round trip)."""
    def call(q):
        view = client.pinned()
        ids, embeds = view.get_top_docs(q, n_docs)
        titles, texts = view.get_passages(ids.reshape(-1))
        return ids, embeds, titles
    return call


def sequential(fns: dict, pool: QuestionPool, batch: int, warmup: int, repeats: Optional[int], budget_s: float,
               min_repeats: int = 5, max_repeats: int = 60) -> dict:
    """Per name, latencies of `fns[name](questions)` called one after the other: every round gives all
    of them the same fresh batch, their order rotating, so that a change of the machine's load weighs
    on all alike. `repeats` None: as many rounds as `budget_s` allows (from the warm-up's duration)."""
    names = list(fns)
    times = {name: [] for name in names}
    rounds, i = warmup + (repeats or max_repeats), 0
    while i < rounds:
        q = pool.take(batch)
        order = names[i % len(names):] + names[:i % len(names)]
        spent = 0.0
        for name in order:
            start = time.perf_counter()
            fns[name](q)
            took = time.perf_counter() - start
            spent += took
            if i >= warmup:
                times[name].append(took)
        if i == warmup - 1 and repeats is None:  # size the timed rounds from the last warm-up round
            rounds = warmup + max(min_repeats, min(max_repeats, int(budget_s / max(spent, 1e-6))))
        i += 1
    return {name: _summary(t, batch) for name, t in times.items()}


def concurrent(fn, pool: QuestionPool, batch: int, clients: int, calls_per_client: int) -> dict:
    """`clients` threads, each making `calls_per_client` calls on fresh batches: queries/s over the wall
    time from the first call to the last answer, and the latency of every call."""
    work = [[pool.take(batch) for _ in range(calls_per_client)] for _ in range(clients)]
    latencies, errors = [], []
    lock, gate = threading.Lock(), threading.Barrier(clients + 1)

    def client(batches):
        gate.wait()
        for q in batches:
            start = time.perf_counter()
            try:
                fn(q)
            except Exception as err:  # noqa: BLE001 - reported after the run
                errors.append(err)
                return
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in work]
    for t in threads:
        t.start()
    gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return _summary(latencies, batch, wall_s=wall)


def concurrent_pair(fns: dict, pool: QuestionPool, batch: int, clients: int, calls_per_client: int,
                    rounds: int = 2) -> dict:
    """`concurrent` for each of `fns`, taking turns over `rounds` (order alternating); pooled."""
    names = list(fns)
    parts = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            parts[name].append(concurrent(fns[name], pool, batch, clients, calls_per_client))
    out = {}
    for name, runs in parts.items():
        calls = sum(p["calls"] for p in runs)
        wall = sum(p["wall_s"] for p in runs)
        out[name] = {"calls": calls, "wall_s": wall, "queries_per_s": batch * calls / wall,
                     "p50_s": statistics.median([p["p50_s"] for p in runs]),
                     "p99_s": max(p["p99_s"] for p in runs), "rounds": rounds, "clients": clients}
    return out


# === Memory ===
def _status_bytes(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM) in bytes; 0 off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# === Sizing on paper ===
WIKI_DPR_PASSAGES = 21_015_300
WIKI_DPR_DIM = 768
PASSAGE_TEXT_BYTES = 620  # ~100 words x ~6 bytes + a title (an estimate of wiki_dpr's psgs_w100, not measured here)
NODE_GIB = (64, 128, 256)
SHARD_COUNTS = (1, 2, 4, 8, 16)
USABLE_SHARE = 0.75  # of a node's memory for actors; the rest: OS, Ray's object store, page cache of the passages
# wiki_dpr's two faiss indexes: "exact" IndexHNSWSQ (8-bit SQ, M 128), "compressed" IndexIVFPQ (4096 lists, 128 x 8 bits)
SIZING_KINDS = {
    "flat": {"label": "flat (IndexFlatIP, exact)"},
    "hnsw_sq8": {"label": "HNSW-SQ8 (IndexHNSWSQ, M 128: wiki_dpr's \"exact\")", "hnsw_m": 128},
    "ivfpq": {"label": "IVF-PQ (IVF4096, PQ128 x 8 bits: wiki_dpr's \"compressed\")", "nlist": 4096, "pq_m": 128,
              "pq_bits": 8},
}


def index_bytes(kind: str, dim: int = WIKI_DPR_DIM, hnsw_m: int = 128, nlist: int = 4096, pq_m: int = 128,
                pq_bits: int = 8) -> tuple[float, float, str]:
    """(bytes per vector, fixed bytes per index, formula) of a faiss index held in memory.

    - flat: the float32 vector, 4 x dim.
    - HNSW over `codes` bytes per vector (faiss' HNSW): neighbour lists of int32 ids, 2M slots at
      level 0 and M at each upper level; a vector reaches upper level l with probability M^-l, so
      1/(M-1) upper levels on average; plus its level (int32) and its offset into the lists (int64).
      SQ8 codes are 1 byte per dimension; a fixed 2 x dim floats of quantiser ranges.
    - IVF-PQ: `pq_m` x `pq_bits` / 8 bytes of code plus the int64 id in its inverted list; fixed:
      the coarse centroids (nlist x dim floats) and the PQ codebooks (2^bits x dim floats).
    """
    if kind == "flat":
        return 4.0 * dim, 0.0, f"4 x {dim}"
    if kind in ("hnsw_sq8", "hnsw_flat"):
        codes = dim if kind == "hnsw_sq8" else 4 * dim
        links = 4 * (2 * hnsw_m + hnsw_m / (hnsw_m - 1))
        fixed = 2 * dim * 4 if kind == "hnsw_sq8" else 0
        what = f"{dim}" if kind == "hnsw_sq8" else f"4 x {dim}"
        return codes + links + 12, float(fixed), f"{what} codes + 4 x (2 x {hnsw_m} + {hnsw_m}/{hnsw_m - 1}) links + 12"
    if kind == "ivfpq":
        code = pq_m * pq_bits / 8
        fixed = nlist * dim * 4 + 2**pq_bits * dim * 4
        return code + 8, float(fixed), f"{pq_m} x {pq_bits}/8 code + 8 id"
    raise ValueError(f"unknown kind {kind!r}")


def wiki_dpr_sizing(actor_overhead_bytes: float, passages: int = WIKI_DPR_PASSAGES, dim: int = WIKI_DPR_DIM,
                    shard_counts=SHARD_COUNTS, node_gib=NODE_GIB, usable_share: float = USABLE_SHARE,
                    text_bytes: float = PASSAGE_TEXT_BYTES) -> dict:
    """Memory per shard actor and shards per node for wiki_dpr's index kinds (see `index_bytes`).

    An actor holds its faiss index in memory plus `actor_overhead_bytes` (a Ray worker with faiss,
    pyarrow and the passage store, measured); the passages (titles, texts and the float32
    embeddings the layout stores beside them) are memory-mapped files, on disk, paged in per hit.
    A node gives `usable_share` of its memory to actors.
    """
    kinds, rows = {}, []
    for kind, spec in SIZING_KINDS.items():
        per_vector, fixed, formula = index_bytes(kind, dim, **{k: v for k, v in spec.items() if k != "label"})
        kinds[kind] = {"label": spec["label"], "bytes_per_vector": per_vector, "fixed_bytes": fixed, "formula": formula,
                       "total_gib": (per_vector * passages + fixed) / 2**30}
        for s in shard_counts:
            per_shard = math.ceil(passages / s)
            memory = per_vector * per_shard + fixed + actor_overhead_bytes
            disk = per_shard * (per_vector + 4 * dim + text_bytes) + fixed
            fits = {g: int(g * 2**30 * usable_share // memory) for g in node_gib}
            rows.append({"kind": kind, "shards": s, "passages_per_shard": per_shard, "memory_gib": memory / 2**30,
                         "disk_gib": disk / 2**30, "shards_per_node": fits,
                         "nodes": {g: (math.ceil(s / n) if n else None) for g, n in fits.items()}})
    dpr_hnsw, _, dpr_formula = index_bytes("hnsw_flat", dim + 1, hnsw_m=512)
    return {"passages": passages, "dim": dim, "kinds": kinds, "rows": rows, "usable_share": usable_share,
            "actor_overhead_gib": actor_overhead_bytes / 2**30, "text_bytes": text_bytes,
            "check_dpr_hnsw_flat_gb": dpr_hnsw * passages / 1e9, "check_dpr_hnsw_formula": dpr_formula,
            "check_flat_gb": 4 * dim * passages / 1e9}


# === The run ===
def _start_ray(num_cpus: int, object_store_bytes: int, worker_niceness: Optional[int]):
    """A local Ray cluster for this run (True), or the session this process already has (False).

    `worker_niceness`: the nice value of its worker processes (Ray's default is 15: below every
    ordinary process, the in-process index included); "same": this process' own; None: Ray's default."""
    import ray

    if ray.is_initialized():
        return ray, False
    before = os.environ.get("RAY_worker_niceness")
    if worker_niceness is not None:
        nice = os.nice(0) if worker_niceness == "same" else int(worker_niceness)
        os.environ["RAY_worker_niceness"] = str(nice)  # read by the raylet that ray.init starts
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=object_store_bytes, namespace="rag_twin_bench")
    finally:
        if before is None:
            os.environ.pop("RAY_worker_niceness", None)
        else:
            os.environ["RAY_worker_niceness"] = before
    return ray, True


def _serve(folder: str, name: str, replicas: int) -> tuple:
    """(service, client, seconds from start to ready)."""
    from rag_core.serving import RayIndexService

    started = time.perf_counter()
    service = RayIndexService.start(folder, name=name, namespace="rag_twin_bench", replicas=replicas,
                                    num_cpus=ACTOR_CPUS)
    client = service.index(timeout_s=CLIENT_TIMEOUT_S)
    return service, client, time.perf_counter() - started


def _nice(pid: int) -> Optional[int]:
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except (OSError, AttributeError):  # another node, or not Unix
        return None


def _actors(status: list) -> list:
    return [{"shard": a["shard"], "replica": a["replica"], "passages": a["end"] - a["start"], "pid": a["pid"],
             "rss_bytes": a["rss_bytes"], "peak_rss_bytes": a["peak_rss_bytes"], "load_s": a["load_seconds"],
             "nice": _nice(a["pid"])} for a in status]


def run(quick: bool = False, n_passages: Optional[int] = None, dim: Optional[int] = None,
        repeats: Optional[int] = None, budget_s: Optional[float] = None, clients: int = CLIENTS,
        calls_per_client: Optional[int] = None, work_dir: Optional[str] = None, layouts=LAYOUTS,
        overhead_passages: int = OVERHEAD_PASSAGES, worker_niceness="same") -> dict:
    """Every measurement of the module docstring; a `common.suite_result` with tables and notes."""
    n = n_passages or (QUICK_N_PASSAGES if quick else N_PASSAGES)
    dim = dim or DIM
    work_dir = work_dir or _default_work_dir()
    budget_s = budget_s if budget_s is not None else (8.0 if quick else 25.0)
    calls_per_client = calls_per_client or 1
    shard_counts = sorted({s for _, s, _ in layouts if s > 1})
    started_all = time.perf_counter()

    # --- the folders (built once; the big one in a child process) ---
    big = n * dim * 4 > 256 * 2**20
    build = build_in_subprocess if big else build_folders
    facts = build(work_dir, n, dim, tuple(shard_counts))
    facts.update(build(work_dir, overhead_passages, dim, (2,)))
    facts.update(build(work_dir, BASELINE_PASSAGES, dim, ()))
    single = single_folder(work_dir, n, dim)
    folder_of = {1: single, **{s: shards_folder(work_dir, n, dim, s) for s in shard_counts}}
    faiss_file_bytes = os.path.getsize(os.path.join(single, "index.faiss"))

    import faiss
    import ray  # noqa: F401 - imported before the in-process baseline, as the actors import it

    from rag_core.index import CustomIndex

    faiss.omp_set_num_threads(IN_PROCESS_THREADS)
    pool = QuestionPool(questions(64 * 200, dim))

    # --- in process: load the single index ---
    rss_before = _status_bytes("VmRSS")
    started = time.perf_counter()
    local = CustomIndex(dim, single)
    local.init_index()
    in_process_load_s = time.perf_counter() - started
    in_process = retrieve_in_process(local)
    in_process(pool.take(8))  # every code path once
    rss_after, hwm_after = _status_bytes("VmRSS"), _status_bytes("VmHWM")
    memory_in_process = {"rss_delta_bytes": rss_after - rss_before, "peak_delta_bytes": max(0, hwm_after - rss_before),
                         "faiss_file_bytes": faiss_file_bytes}

    ray_mod, started_ray = _start_ray(RAY_CPUS, 512 * 2**20, worker_niceness)
    tag = f"{os.getpid()}-{int(time.time())}"
    measured, errors = {}, []
    try:
        # --- an actor without a big index: its RSS, and the overhead of a call on tiny indexes ---
        # (1 faiss thread in process, as in every actor: at microseconds per search, a second OpenMP
        # thread only adds its wake-up, milliseconds on a loaded machine)
        faiss.omp_set_num_threads(1)
        overhead = {}
        for label, folder in (("1 actor (1,000 passages)", single_folder(work_dir, BASELINE_PASSAGES, dim)),
                              ("2 shards (2,000 passages)", shards_folder(work_dir, overhead_passages, dim, 2))):
            service, client, load_s = _serve(folder, f"bench-small-{len(overhead)}-{tag}", 1)
            try:
                small = CustomIndex(dim, single_folder(work_dir, overhead_passages, dim) if "2 shards" in label else folder)
                small.init_index()
                fns = {"in process": retrieve_in_process(small), "ray": retrieve_ray(client)}
                timed = sequential(fns, pool, 8, warmup=3, repeats=repeats or (30 if quick else 200), budget_s=budget_s)
                overhead[label] = {"in_process": timed["in process"], "ray": timed["ray"], "load_s": load_s,
                                   "actors": _actors(service.status())}
            finally:
                service.shutdown()
        baseline_actor = overhead["1 actor (1,000 passages)"]["actors"][0]
        faiss.omp_set_num_threads(IN_PROCESS_THREADS)

        # --- the layouts of the big index, each interleaved with the in-process index ---
        for label, shards, replicas in layouts:
            print(f"[ray] {label}: starting ...", file=sys.stderr, flush=True)
            row = {"shards": shards, "replicas": replicas}
            try:
                service, client, load_s = _serve(folder_of[shards], f"bench-{shards}x{replicas}-{tag}", replicas)
            except Exception as err:  # noqa: BLE001 - the other layouts still run
                errors.append(f"{label}: {type(err).__name__}: {err}")
                continue
            try:
                row["load_s"] = load_s
                fns = {"in process": in_process, "ray": retrieve_ray(client)}
                for batch in BATCHES:
                    timed = sequential(fns, pool, batch, warmup=1, repeats=repeats, budget_s=budget_s)
                    row[f"sequential_{batch}"] = timed
                    row[f"concurrent_{batch}"] = concurrent_pair(fns, pool, batch, clients, calls_per_client,
                                                                 rounds=1 if quick else 2)
                    print(f"[ray] {label}, batch {batch}: {json.dumps(timed)[:300]}", file=sys.stderr, flush=True)
            except Exception as err:  # noqa: BLE001
                errors.append(f"{label}: {type(err).__name__}: {err}")
            finally:
                try:
                    row["actors"] = _actors(service.status())
                finally:
                    service.shutdown()
            measured[label] = row
    finally:
        if started_ray:
            ray_mod.shutdown()
    result = {"passages": n, "dim": dim, "n_docs": N_DOCS, "in_process_load_s": in_process_load_s,
              "memory_in_process": memory_in_process, "baseline_actor": baseline_actor, "overhead": overhead,
              "layouts": measured, "errors": errors, "facts": facts, "ray_cpus": RAY_CPUS, "actor_cpus": ACTOR_CPUS,
              "in_process_threads": IN_PROCESS_THREADS, "driver_nice": os.nice(0),
              "actor_nice": sorted({a.get("nice") for lay in measured.values() for a in lay.get("actors", [])},
                                   key=str), "clients": clients, "calls_per_client": calls_per_client,
              "wall_s": time.perf_counter() - started_all}
    result["sizing"] = wiki_dpr_sizing(baseline_actor["peak_rss_bytes"])
    return report(result, quick=quick)


# === Tables ===
def _ms(s: Optional[float]) -> str:
    return "—" if s is None else f"{s * 1e3:,.1f} ms"


def _mib(b: Optional[float]) -> str:
    return "—" if b is None else f"{b / 2**20:,.0f} MiB"


def _verdict(ok: Optional[bool]) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _x(r: Optional[float]) -> str:
    return "—" if r is None else f"{r:.2f}x"


def memory_rows(result: dict) -> list[dict]:
    """Per actor of every layout: its peak RSS against its share (passages / N) of the single index."""
    n = result["passages"]
    single = result["memory_in_process"]
    base = result["baseline_actor"]["peak_rss_bytes"]
    replicas = [a for lay in result["layouts"].values() if lay.get("shards") == 1 for a in lay.get("actors", [])]
    single_actor = statistics.mean(a["peak_rss_bytes"] for a in replicas) if replicas else None
    rows = []
    for label, lay in result["layouts"].items():
        for a in lay.get("actors", []):
            share = a["passages"] / n
            net = a["peak_rss_bytes"] - base
            row = {"layout": label, "shard": a["shard"], "replica": a["replica"], "share": share,
                   "peak_rss_bytes": a["peak_rss_bytes"], "net_bytes": net,
                   "in_process_share_bytes": single["peak_delta_bytes"] * share,
                   "file_share_bytes": single["faiss_file_bytes"] * share,
                   "single_actor_share_bytes": single_actor * share if single_actor else None}
            row["net_vs_in_process"] = _ratio(net, row["in_process_share_bytes"])
            row["net_vs_file"] = _ratio(net, row["file_share_bytes"])
            row["total_vs_single_actor"] = _ratio(a["peak_rss_bytes"], row["single_actor_share_bytes"])
            rows.append(row)
    return rows


def targets(result: dict, memory: list[dict]) -> list[dict]:
    """The three targets, each with the numbers it is judged on."""
    out = []
    for label, lay in result["layouts"].items():
        mine = [r for r in memory if r["layout"] == label]
        if not mine:
            continue
        worst = max(mine, key=lambda r: r["net_vs_in_process"] or 0)
        strict = max(mine, key=lambda r: r["total_vs_single_actor"] or 0)
        out.append({"target": f"memory per actor <= {TARGET_MEMORY}x its share of the single index", "layout": label,
                    "measured": f"index memory (actor peak RSS {_mib(worst['peak_rss_bytes'])} - an actor without "
                                f"an index {_mib(worst['peak_rss_bytes'] - worst['net_bytes'])} = "
                                f"{_mib(worst['net_bytes'])}) / (in-process RSS added by the index x "
                                f"{worst['share']:.2f} = {_mib(worst['in_process_share_bytes'])}) = "
                                f"{_x(worst['net_vs_in_process'])}",
                    "met": worst["net_vs_in_process"] is not None and worst["net_vs_in_process"] <= TARGET_MEMORY})
        if strict["total_vs_single_actor"] is not None:
            out.append({"target": f"same, whole processes: actor peak RSS <= {TARGET_MEMORY}x (one actor holding "
                                  "the single index) x share", "layout": label,
                        "measured": f"{_mib(strict['peak_rss_bytes'])} / {_mib(strict['single_actor_share_bytes'])} "
                                    f"= {_x(strict['total_vs_single_actor'])}",
                        "met": strict["total_vs_single_actor"] <= TARGET_MEMORY})
    two = next((lay for lay in result["layouts"].values() if lay.get("shards") == 2 and lay.get("replicas") == 1), None)
    if two and "sequential_64" in two:
        for mode in ("sequential", "concurrent"):
            t = two[f"{mode}_64"]
            r = _ratio(t["ray"]["queries_per_s"], t["in process"]["queries_per_s"])
            out.append({"target": f"2 flat shards >= {TARGET_QPS}x in-process queries/s at batch 64", "layout":
                        f"2 flat shards, {mode} calls" + (f" ({CLIENTS} client threads)" if mode == "concurrent" else ""),
                        "measured": f"{t['ray']['queries_per_s']:,.1f} / {t['in process']['queries_per_s']:,.1f} q/s "
                                    f"= {_x(r)}", "met": r is not None and r >= TARGET_QPS})
    for label, o in result["overhead"].items():
        d = o["ray"]["p50_s"] - o["in_process"]["p50_s"]
        out.append({"target": f"overhead of a call at batch 8 < {TARGET_OVERHEAD_MS:g} ms", "layout": f"{label}, sequential",
                    "measured": f"Ray p50 {_ms(o['ray']['p50_s'])} - in-process p50 {_ms(o['in_process']['p50_s'])} "
                                f"= {_ms(d)}", "met": d * 1e3 < TARGET_OVERHEAD_MS})
    for label, lay in result["layouts"].items():
        t = lay.get("sequential_8")
        if t:
            d = t["ray"]["p50_s"] - t["in process"]["p50_s"]
            out.append({"target": f"overhead of a call at batch 8 < {TARGET_OVERHEAD_MS:g} ms (information: the "
                                  "search dominates)", "layout": f"{label}, {result['passages']:,} passages, sequential",
                        "measured": f"Ray p50 {_ms(t['ray']['p50_s'])} - in-process p50 {_ms(t['in process']['p50_s'])} "
                                    f"= {_ms(d)}", "met": None})
    return out


def tables(result: dict) -> list[dict]:
    n, out = result["passages"], []
    memory = memory_rows(result)
    out.append({"title": "Targets", "columns": ["target", "layout", "measured", "result"],
                "rows": [[t["target"], t["layout"], t["measured"], _verdict(t["met"])] for t in targets(result, memory)]})
    rows = []
    for label, lay in result["layouts"].items():
        for batch in BATCHES:
            for mode in ("sequential", "concurrent"):
                t = lay.get(f"{mode}_{batch}")
                if not t:
                    continue
                a, b = t["in process"], t["ray"]
                how = "1 client" if mode == "sequential" else f"{a.get('clients', CLIENTS)} client threads"
                rows.append([label, batch, f"{mode} ({how}), {b['calls']} calls", f"{a['queries_per_s']:,.1f}",
                             f"{b['queries_per_s']:,.1f}", _x(_ratio(b["queries_per_s"], a["queries_per_s"])),
                             f"{_ms(a['p50_s'])} / {_ms(a['p99_s'])}", f"{_ms(b['p50_s'])} / {_ms(b['p99_s'])}",
                             _ms(b["p50_s"] - a["p50_s"])])
    out.append({"title": f"Queries/s and latency per call: {n:,} x {result['dim']} flat, top {result['n_docs']} with "
                         "passages, Ray layout vs the in-process index (interleaved, same questions)",
                "columns": ["layout", "batch", "calls", "in-process q/s", "Ray q/s", "Ray / in-process",
                            "in-process p50 / p99", "Ray p50 / p99", "Ray p50 - in-process p50"], "rows": rows})
    rows = []
    for label, o in result["overhead"].items():
        a, b = o["in_process"], o["ray"]
        rows.append([label, b["calls"], f"{_ms(a['p50_s'])} / {_ms(a['p99_s'])}", f"{_ms(b['p50_s'])} / {_ms(b['p99_s'])}",
                     _ms(b["p50_s"] - a["p50_s"]), _verdict((b["p50_s"] - a["p50_s"]) * 1e3 < TARGET_OVERHEAD_MS)])
    out.append({"title": "Overhead of a call at batch 8 (serialization, scheduling, fan-out and merge) on small "
                         f"{result['dim']}-dim indexes, where the search takes microseconds",
                "columns": ["service", "calls", "in-process p50 / p99", "Ray p50 / p99", "overhead (p50 difference)",
                            f"< {TARGET_OVERHEAD_MS:g} ms"], "rows": rows})
    rows = []
    single = result["memory_in_process"]
    for r in memory:
        rows.append([r["layout"], f"{r['shard']} / {r['replica']}", f"{r['share']:.2f}", _mib(r["peak_rss_bytes"]),
                     _mib(r["net_bytes"]), _mib(r["in_process_share_bytes"]), _x(r["net_vs_in_process"]),
                     _mib(r["file_share_bytes"]), _x(r["net_vs_file"]), _mib(r["single_actor_share_bytes"]),
                     _x(r["total_vs_single_actor"])])
    out.append({"title": f"Memory per actor (peak RSS from service.status()); single index in process: RSS "
                         f"+{_mib(single['rss_delta_bytes'])} after loading, peak +{_mib(single['peak_delta_bytes'])}; "
                         f"faiss file {_mib(single['faiss_file_bytes'])}; an actor serving {BASELINE_PASSAGES:,} "
                         f"passages: peak {_mib(result['baseline_actor']['peak_rss_bytes'])}",
                "columns": ["layout", "shard / replica", "share of passages", "actor peak RSS",
                            "index memory (peak - actor without index)", "in-process index RSS x share", "ratio",
                            "faiss file x share", "ratio", "one actor with the whole index x share",
                            "ratio (whole processes)"], "rows": rows})
    rows = [["in process (CustomIndex.init_index)", "—", f"{result['in_process_load_s']:.2f} s", "1.00x"]]
    for label, lay in result["layouts"].items():
        if "load_s" in lay and lay.get("actors"):
            slowest = max(a["load_s"] for a in lay["actors"])
            rows.append([label, f"{slowest:.2f} s", f"{lay['load_s']:.2f} s", _x(_ratio(lay["load_s"], result["in_process_load_s"]))])
    out.append({"title": "Time to load", "columns": ["layout", "slowest actor's own load (in ShardServer)",
                                                    "service start to ready (RayIndexService.start + index())",
                                                    "vs in process"], "rows": rows})
    out += sizing_tables(result)
    return out


def sizing_tables(result: dict) -> list[dict]:
    s = result["sizing"]
    n = result["passages"]
    single = result["memory_in_process"]
    rows = [[k["label"], f"{k['bytes_per_vector']:,.0f} B", k["formula"], _mib(k["fixed_bytes"]),
             f"{k['total_gib']:,.1f} GiB"] for k in s["kinds"].values()]
    flat_actor = [r for r in memory_rows(result) if r["layout"] in result["layouts"]]
    per_vector_actor = [r["net_bytes"] / (r["share"] * n) for r in flat_actor]
    measured = (f"measured on the {n:,} x {result['dim']} flat index: faiss file "
                f"{single['faiss_file_bytes'] / n:,.0f} B/vector, in-process RSS added {single['rss_delta_bytes'] / n:,.0f} "
                f"B/vector (peak {single['peak_delta_bytes'] / n:,.0f})"
                + (f", actors {min(per_vector_actor):,.0f}-{max(per_vector_actor):,.0f} B/vector of their shard"
                   if per_vector_actor else "")
                + f"; on paper {4 * result['dim']:,} B/vector at {result['dim']} dims")
    out = [{"title": f"Sizing on paper for wiki_dpr ({s['passages']:,} passages x {s['dim']}): faiss index in memory "
                     f"(flat check: {s['check_flat_gb']:.1f} GB of float32 vectors; {measured})",
            "columns": ["index", "bytes per vector", "formula", "fixed per index", "whole index"], "rows": rows}]
    node = s["rows"][0]["shards_per_node"].keys()
    rows = []
    for r in s["rows"]:
        cells = [f"{r['shards_per_node'][g]} ({r['nodes'][g]} node{'s' if (r['nodes'][g] or 0) > 1 else ''})"
                 if r["shards_per_node"][g] else "does not fit" for g in node]
        rows.append([s["kinds"][r["kind"]]["label"].split(" (")[0], r["shards"], f"{r['passages_per_shard']:,}",
                     f"{r['memory_gib']:,.1f} GiB", f"{r['disk_gib']:,.1f} GiB", *cells])
    out.append({"title": f"wiki_dpr per shard actor: memory = index bytes x passages / S + fixed + "
                         f"{s['actor_overhead_gib']:.2f} GiB per actor (measured: an actor serving {BASELINE_PASSAGES:,} "
                         f"passages); shards per node at {s['usable_share']:.0%} of its memory (nodes for all S shards)",
                "columns": ["index", "S", "passages per shard", "memory per shard", "disk per shard (faiss + "
                            f"passages: float32 embeddings + ~{s['text_bytes']} B text)",
                            *[f"per {g} GiB node" for g in node]], "rows": rows})
    return out


def notes(result: dict, quick: bool) -> list[str]:
    out = [
        f"Ray: one local cluster started with ray.init(num_cpus={result['ray_cpus']}) on a machine with "
        f"{os.cpu_count()} cores: the logical CPUs exceed the physical cores, so the 4 shards (and the 4 client "
        f"threads) compete for 2 cores. Every actor reserves num_cpus={result['actor_cpus']} and so searches with "
        f"{result['actor_cpus']} faiss thread; the in-process index searches with {result['in_process_threads']} faiss "
        "threads (the machine's cores). The 2 shards thus use the same 2 cores as the in-process index; the 2 replicas "
        "each use 1 thread, so with sequential calls (one call at a time) a replica has half the in-process threads, "
        "and replicas only help with concurrent calls. Nice values: actors "
        f"{', '.join(str(v) for v in result.get('actor_nice', []))}, this process {result.get('driver_nice')} "
        "(Ray starts its workers at nice 15 unless RAY_worker_niceness says otherwise; this run sets it to the "
        "benchmark process' own when it starts the cluster, so that neither side yields the CPU to the other or to "
        "other work on the machine).",
        "Timed call (both sides): top-5 ids and vectors of a batch of questions, then the titles and texts of the hits "
        "(in process: get_top_docs + get_passages; Ray: pinned() view, get_top_docs + get_passages, as RagRetriever "
        "does per call: the passages come back with the shards' answers). Sequential: 1 client, Ray and in process "
        "taking turns on every batch (same questions), median of the timed calls after 1 warm-up; concurrent: "
        f"{result['clients']} client threads x {result['calls_per_client']} calls each, Ray and in process taking "
        "turns, queries/s over the wall time. p99 is the nearest rank (the maximum of fewer than 100 calls).",
        f"Flat search over {result['passages']:,} x {result['dim']} float32 reads "
        f"{result['passages'] * result['dim'] * 4 / 1e9:.2f} GB per pass over the vectors; on the big index the "
        "Ray - in-process difference at batch 8 mixes the search (split differently: S processes of 1 thread vs 1 "
        "process of 2) with the overhead, so the overhead target is judged on the small indexes, where the call is "
        "all there is (in process with 1 faiss thread there, as every actor searches).",
        f"Client timeout per actor answer: {CLIENT_TIMEOUT_S:.0f} s (service.index(timeout_s=...)); with the "
        "default 60 s, 4 concurrent batch-64 calls on 2 replicas of the 1,000,000-vector index timed out, and each "
        "timeout resubmitted the search to the other (equally busy) replica until ShardUnavailableError.",
        "Memory: 'index memory' of an actor = its peak RSS - the peak RSS of an actor serving "
        f"{BASELINE_PASSAGES:,} passages (the Ray worker with faiss, pyarrow, datasets and rag_core loaded); "
        "'in-process index RSS' = the RSS the benchmark process gained loading the single index (peak). The passages "
        "and their embeddings are memory-mapped Arrow: counted in RSS only where pages were touched.",
        "Load: the index files were in the page cache for both sides (written by the build, then read once in "
        "process before the services start). 'Service start to ready' includes the placement group, starting the "
        "worker processes and their imports.",
    ]
    if result.get("errors"):
        out.append("Errors: " + "; ".join(result["errors"]))
    if quick:
        out.append(f"--quick: {result['passages']:,} passages, fewer calls; not the 1,000,000 of the full run")
    return out


def report(result: dict, quick: bool = False) -> dict:
    """`common.suite_result` of a run: the batch-64 queries/s target as a case, every table, the raw numbers."""
    from .common import case, suite_result

    cases = []
    two = next((lay for lay in result["layouts"].values() if lay.get("shards") == 2 and lay.get("replicas") == 1), None)
    if two and "sequential_64" in two:
        t = two["sequential_64"]
        cases.append(case(f"Ray, 2 flat shards vs the index in process ({result['passages']:,} x {result['dim']}), "
                          "batch 64, sequential calls: queries/s (ours = Ray, original = in process)",
                          t["ray"]["mean_s"], t["in process"]["mean_s"], target=TARGET_QPS, items=64,
                          items_unit="queries"))
    config = {"passages": result["passages"], "dim": result["dim"], "index": "flat", "n_docs": result["n_docs"],
              "batches": "8 and 64", "ray logical CPUs": result["ray_cpus"], "CPUs per actor": result["actor_cpus"],
              "in-process faiss threads": result["in_process_threads"], "client threads": result["clients"]}
    return suite_result("ray", cases, config=config, notes=notes(result, quick), tables=tables(result), raw=result)


def print_tables(suite: dict) -> None:
    for table in suite["tables"]:
        print(f"\n{table['title']}")
        print(" | ".join(str(c) for c in table["columns"]))
        for row in table["rows"]:
            print(" | ".join(str(c) for c in row))
    for note in suite["notes"]:
        print(f"- {note}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N_PASSAGES:,} passages, fewer calls")
    parser.add_argument("--passages", type=int, default=None, help=f"vectors in the index (default {N_PASSAGES:,})")
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed sequential calls per case (default: by budget)")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds of sequential calls per case")
    parser.add_argument("--work-dir", default=None, help="where the indexes are cached (default benchmarks/_work/indexes)")
    parser.add_argument("--json", default=None, help="also write the suite's result here")
    args = parser.parse_args(argv)
    suite = run(quick=args.quick, n_passages=args.passages, dim=args.dim, repeats=args.repeats, budget_s=args.budget_s,
                work_dir=args.work_dir)
    print_tables(suite)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(suite, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())

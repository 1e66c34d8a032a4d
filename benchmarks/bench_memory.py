"""Memory: peak resident memory of a process that loads a 200,000-passage index of each kind and serves queries.

For each index kind the builder offers (flat, hnsw, hnsw_sq8, ivfpq), the index is built once from
synthetic 768-dim vectors with the library's own build API and cached under
`benchmarks/_work/indexes/` (`common.cached_index`). Then a fresh interpreter per kind imports the libraries (RSS
"before loading"), loads the index with `CustomIndex`, serves batches of 8 questions (`get_top_docs`
+ `get_doc_dicts`, n_docs 5) and reports its peak resident set size (`VmHWM` of /proc/self/status, no psutil).
"Index memory" is the peak minus the RSS before loading: what the index costs a serving process.

    python -m benchmarks.bench_memory            # 200,000 passages
    python -m benchmarks.bench_memory --quick    # 20,000 passages (a smoke run, not the issue's size)

The vectors are a mixture of Gaussian clusters (real embeddings cluster; uniform noise would
make every approximate index look worse than it is). Passages carry short synthetic titles and
texts: the texts stay memory-mapped Arrow either way, so their length hardly moves the RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Optional

from .common import cached_index, record_row, suite_result

HERE = os.path.dirname(os.path.abspath(__file__))
DIM = 768
N_PASSAGES = 200_000
QUICK_N_PASSAGES = 20_000
KINDS = ("flat", "hnsw", "hnsw_sq8", "ivfpq")  # when the builder does not list them
BATCH, N_DOCS = 8, 5
SERVE_BATCHES = 50  # 400 questions per kind: steady state, every code path touched
COMPRESSION_TARGET = 8.0  # target: a compressed kind at <= 1/8 of flat's memory


# === Building (the library's builder, cached) ===
# efConstruction only changes how well the HNSW graph is built, not its size (that is M); 40
# (faiss' default) instead of the builder's 200 keeps the first build of the two HNSW kinds to a
# few minutes on two cores. Everything else is the builder's default.
BUILD_KWARGS = {"hnsw": {"ef_construction": 40}, "hnsw_sq8": {"ef_construction": 40}}


# === Serving (runs in a fresh interpreter per kind) ===
def _status_mib(field: str) -> Optional[float]:
    """A memory field of /proc/self/status (VmHWM, RssAnon, RssFile, ...) in MiB; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _maxrss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's `VmHWM` (the high-water mark of this address space) rather than `ru_maxrss`: the latter
    survives `exec` and so starts at the size of the parent that forked us.
    """
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_split() -> dict:
    """Resident memory now, split into anonymous (heap: not reclaimable) and file-backed (page cache of mmaps)."""
    return {"anon": _status_mib("RssAnon"), "file": _status_mib("RssFile")}


SERVE_SCRIPT = r"""
import json, sys, time
from benchmarks.bench_memory import _maxrss_mib, _rss_split
from benchmarks.common import synthetic_vectors
start_rss = _maxrss_mib()
import numpy as np, faiss, pyarrow, datasets  # what loading needs anyway, so that the baseline holds it
{imports}
rng = np.random.default_rng(1)
base = synthetic_vectors({n_q}, seed=0)  # questions near stored passages, as real questions are
questions = base[rng.permutation({n_q})] + 0.1 * rng.standard_normal(({n_q}, {dim}), dtype=np.float32)
del base
baseline, baseline_split = _maxrss_mib(), _rss_split()
t0 = time.perf_counter()
{load}
load_s = time.perf_counter() - t0
loaded = _maxrss_mib()
t0 = time.perf_counter()
for i in range({batches}):
    q = questions[i * {batch}:(i + 1) * {batch}]
    {serve}
serve_s = time.perf_counter() - t0
end_split = _rss_split()
print("BENCH_MEMORY " + json.dumps(dict(start_rss_mib=start_rss, baseline_rss_mib=baseline, loaded_rss_mib=loaded,
      peak_rss_mib=_maxrss_mib(), load_s=load_s, serve_s=serve_s, queries={batches} * {batch},
      baseline_split=baseline_split, end_split=end_split)))
"""

OURS = dict(
    imports="from rag_core.index import CustomIndex",
    load="index = CustomIndex({dim}, {passages!r}, {index_file!r}); index.init_index()",
    serve="ids, embeds = index.get_top_docs(q, {n_docs}); docs = index.get_doc_dicts(ids)",
)
# The original (transformers' CustomHFIndex) on the same flat files, for reference.
ORIGINAL = dict(
    imports="from transformers.models.rag.retrieval_rag import CustomHFIndex",
    load="index = CustomHFIndex.load_from_disk({dim}, {passages!r}, {index_file!r}); index.init_index()",
    serve="ids, embeds = index.get_top_docs(q, {n_docs}); docs = index.get_doc_dicts(ids)",
)


def serve(template: dict, fields: dict, timeout_s: float = 600) -> dict:
    """Load and serve in a fresh interpreter; return its RSS figures (MiB) and queries/s."""
    n_q = SERVE_BATCHES * BATCH
    parts = {k: v.format(**fields, n_docs=N_DOCS, dim=DIM) for k, v in template.items()}
    code = SERVE_SCRIPT.format(n_q=n_q, dim=DIM, batches=SERVE_BATCHES, batch=BATCH, **parts)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s,
                          env=env, cwd=os.path.dirname(HERE))
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_MEMORY "):
            row = json.loads(line[len("BENCH_MEMORY "):])
            row["index_rss_mib"] = row["peak_rss_mib"] - row["baseline_rss_mib"]
            before, after = row.pop("baseline_split"), row.pop("end_split")
            if after["anon"] is not None:
                row["index_anon_mib"] = after["anon"] - before["anon"]  # heap the index holds after serving
                row["index_file_mib"] = after["file"] - before["file"]  # mmapped pages resident (reclaimable)
            row["queries_per_s"] = row["queries"] / row["serve_s"] if row["serve_s"] else None
            return row
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"serving process exited with {proc.returncode}: {' / '.join(tail)}")


def _original_fields(folder: str) -> Optional[dict]:
    """The original's (passages folder, faiss file) for a builder folder, when the layout has them."""
    passages, index_file = os.path.join(folder, "passages"), os.path.join(folder, "index.faiss")
    if os.path.isdir(passages) and os.path.isfile(index_file):
        return {"passages": passages, "index_file": index_file}
    return None


# === The suite ===
def run(quick: bool = False, kinds=None, n_passages: Optional[int] = None, with_original: bool = True) -> dict:
    """Memory rows (one per index kind, plus the original's flat index for reference); no timed cases."""
    n = n_passages or (QUICK_N_PASSAGES if quick else N_PASSAGES)
    if kinds is None:
        try:  # every kind the builder offers
            from rag_core.build_index import INDEX_KINDS as kinds
        except ImportError:
            kinds = KINDS
    rows, notes = [], []
    for kind in kinds:
        row = {"kind": kind}
        try:
            print(f"[memory] {kind}: building {n:,} x {DIM} (cached after the first run) ...", flush=True)
            folder, facts = cached_index(kind, n, DIM, **BUILD_KWARGS.get(kind, {}))
            row.update(build_s=facts["build_s"], disk_mib=facts["disk_mib"])
            print(f"[memory] {kind}: serving in a fresh process ...", flush=True)
            row.update(serve(OURS, {"passages": folder, "index_file": None}))
        except Exception as err:  # one kind failing leaves the others' rows
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(record_row("memory", row))
        print(f"[memory] {kind}: {row}", flush=True)
        if with_original and kind == "flat" and "error" not in row:
            fields = _original_fields(folder)
            if fields:
                ref = {"kind": "flat, original's CustomHFIndex (reference)", "disk_mib": row.get("disk_mib")}
                try:
                    ref.update(serve(ORIGINAL, fields))
                except Exception as err:
                    ref["error"] = f"{type(err).__name__}: {err}"
                rows.append(record_row("memory", ref))
    flat = next((r for r in rows if r["kind"] == "flat" and r.get("index_rss_mib")), None)
    for r in rows:
        if flat and r.get("index_rss_mib"):
            r["vs_flat"] = r["index_rss_mib"] / flat["index_rss_mib"]
            if r.get("index_anon_mib") and flat.get("index_anon_mib"):
                r["anon_vs_flat"] = r["index_anon_mib"] / flat["index_anon_mib"]
            if r["kind"] in ("hnsw_sq8", "ivfpq"):
                r["target"] = f"<= 1/{COMPRESSION_TARGET:g} of flat"
                r["met"] = r["vs_flat"] <= 1 / COMPRESSION_TARGET
    if quick:
        notes.append(f"--quick: {n:,} passages, not the issue's {N_PASSAGES:,}")
    notes.append("Peak RSS (VmHWM) of a fresh process per kind; 'before loading' includes numpy, faiss, "
                 "pyarrow, datasets, the index module and the questions, so 'index memory' is what loading and "
                 "serving the index adds")
    notes.append("Of that, 'anonymous' is heap the process holds after serving (faiss structures, copies); "
                 "'file-backed' is pages of memory-mapped files (the passages' Arrow embeddings and texts) "
                 "resident at the end: counted in RSS, but page cache the kernel can reclaim. The target "
                 "verdict uses the peak RSS, the stricter of the two")
    return suite_result(
        "memory", [], config={"passages": n, "dim": DIM, "batch": BATCH, "n_docs": N_DOCS,
                                 "questions served": SERVE_BATCHES * BATCH},
        notes=notes, memory=rows,
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, kinds=args.kinds.split(",")), indent=1, default=str))

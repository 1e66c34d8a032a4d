"""PyTorch models benchmark: ours (`rag_pt`) vs transformers' PyTorch RAG on the same weights, inputs and index.

Runs in the main environment (transformers 5, torch): the original is transformers' own
`RagTokenForGeneration` / `RagSequenceForGeneration` / `RagRetriever` of the installed version, loaded
from the checkpoint ours saves, so both hold the same weights.

Sizes: batch 8, n_docs 5, a BART generator with d_model 256 and 2+2 layers, a 30,522-token vocabulary
(the MiniLM WordPiece vocabulary serves as both tokenizers), a DPR question encoder of the same width,
20,000 passages in a flat inner-product index, 20 generated tokens (min_length = max_length, so both
sides do the same number of steps). Each side uses its own retriever on the same `custom` index files:
ours (rag_core.RagRetriever) pads each batch's contexts to its longest context, the original
(transformers.RagRetriever) every context to `max_combined_length`.

Two context lengths, both reported (the same passages as the TensorFlow suite):
  "300": passages of 60-100 words (every word of Python's language reference, symbols included), the
         original's default `max_combined_length=300`; many contexts reach 300 tokens, so ours pads to
         ~300 too.
  "128": short passages of 60 alphabetic words (~80 tokens), `max_combined_length=128`; ours pads to the
         longest context of the batch (~100 tokens), the original to 128.

Inputs: every call (warm-up or timed) gets a question batch no earlier call saw, from a pool of random-word
questions, so neither side times repeated inputs and ours' passage-token cache hits only when different
questions retrieve the same passage (the table reports its hit rate). A random question encoder maps all
questions to nearly one direction; the index vectors are made orthogonal to that mean direction, so
retrieval varies with the question.

Timing: one untimed warm-up call per side (its batch is also the check that both generate the same
ids), then both alternate on the same fresh batches: the median of up to 5 calls (at least 2, fewer when
a case exceeds its time budget). Ratio = original seconds / ours.

Cases (ratio = original seconds / ours; targets, at both context lengths):
  train step RAG-Token / RAG-Sequence: forward + backward with retrieval        >= 1.5x
  RAG-Token generate, greedy and beam 4 (20 new tokens)                         >= 2x
  RAG-Sequence generate, beam 4 (thorough decoding, 20 new tokens)              >= 4x

    python -m benchmarks.bench_pt              # full size, both context lengths
    python -m benchmarks.bench_pt --quick      # a smoke run: 2,000 passages, batches of 2, 5 new tokens,
                                               # short contexts, three cases
    python -m benchmarks.bench_pt --device cuda --precision bfloat16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback

os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow otherwise; this suite is torch only
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from . import common  # noqa: E402

from .common import BATCH, LABEL_TOKENS, LENGTHS, N_DOCS, N_PASSAGES, NEW_TOKENS, QUICK_N_PASSAGES  # noqa: E402,F401
from .common import bench_rag_config as _config  # noqa: E402
from .common import bench_tokenizer as _tokenizer  # noqa: E402

TOKEN, SEQUENCE = "RagTokenForGeneration", "RagSequenceForGeneration"
WORK = os.path.join(common.WORK_DIR, "bench_pt")
QUICK_NEW_TOKENS, QUICK_BATCH = 5, 2
POOL_BATCHES = 64  # fresh batches per context length: 5 cases x (1 warm-up + up to 5 timed) = 30 at most

# benchmarks/RESULTS.md as committed in c20f845: transformers 4.57.6, one fixed question batch for every
# call (ours' passage-token cache hit on every timed call), 90-100-word alphabetic passages,
# max_combined_length 300 (ours padded to ~150 tokens, the original to 300).
PREVIOUS = {"train_token": 1.96, "train_sequence": 2.63, "token_greedy": 1.76, "token_beam": 3.73,
            "sequence_beam": 2.35}

# (key, name, head, generate kwargs or None for a train step, target)
PLAN = [
    ("train_token", "train step RAG-Token (fwd+bwd, retrieval)", TOKEN, None, 1.5),
    ("train_sequence", "train step RAG-Sequence (fwd+bwd, retrieval)", SEQUENCE, None, 1.5),
    ("token_greedy", "RAG-Token generate greedy", TOKEN, {"num_beams": 1}, 2.0),
    ("token_beam", "RAG-Token generate beam 4", TOKEN, {"num_beams": 4}, 2.0),
    ("sequence_beam", "RAG-Sequence generate beam 4", SEQUENCE, {"num_beams": 4}, 4.0),
]
CASE_KEYS = tuple(row[0] for row in PLAN)
QUICK_CASES = ("train_token", "token_greedy", "sequence_beam")


# === Models and index ===
def _mean_question_direction(model, device: str, n: int = 512):
    """The unit mean direction of our question encoder's vectors over `n` random questions."""
    import torch

    tok = _tokenizer()
    enc = tok(common.bench_questions(n, seed=12345), padding=True, return_tensors="pt")
    with torch.no_grad():
        vectors = model.rag.encode_question(enc["input_ids"].to(device), enc["attention_mask"].to(device))
    return common.mean_direction(vectors.float().cpu().numpy())


def _build(length: str, n: int, d_model: int, layers: int, device: str) -> dict:
    """Ours (random weights) and the original loaded from ours' checkpoint, for both heads, with their
    retrievers on one index whose vectors are orthogonal to the question encoder's mean direction."""
    import torch
    import transformers

    import rag_pt
    from rag_core import RagRetriever

    spec = LENGTHS[length]
    config = _config(d_model, layers, os.path.join(WORK, "unset"))
    config.max_combined_length = spec["max_combined_length"]
    torch.manual_seed(0)
    probe = rag_pt.RagTokenForGeneration(config).to(device).eval()
    direction, concentration = _mean_question_direction(probe, device)
    del probe
    folder = common.orthogonal_index(WORK, spec["index"], spec["passages"], n, config.retrieval_vector_size, direction)
    config.passages_path = os.path.join(folder, "passages")
    config.index_path = os.path.join(folder, "index.faiss")
    hf_config = transformers.RagConfig(**config.to_dict())
    tok = _tokenizer()
    ours_retriever = RagRetriever(config, tok, tok)
    original_retriever = transformers.RagRetriever(hf_config, tok, tok)
    ours, original = {}, {}
    for head in (TOKEN, SEQUENCE):
        torch.manual_seed(0)  # the same seed as the probe: the same question encoder, the same direction
        model = getattr(rag_pt, head)(config)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            theirs = getattr(transformers, head).from_pretrained(tmp, config=hf_config)
        model.set_retriever(ours_retriever)
        theirs.set_retriever(original_retriever)
        ours[head], original[head] = model.to(device), theirs.to(device)
    return {"config": config, "ours": ours, "original": original, "log": common.RetrievalLog(ours_retriever),
            "concentration": concentration}


# === Cases ===
def _run_length(length: str, n: int, d_model: int, layers: int, quick: bool, device: str, precision: str,
                keys, cases: list, rows: list, notes: list) -> None:
    import torch

    spec = LENGTHS[length]
    label = common.length_label(length)
    started = time.perf_counter()
    built = _build(length, n, d_model, layers, device)
    print(f"[{label}] models and index ready in {time.perf_counter() - started:.0f} s (question vectors' "
          f"mean length {built['concentration']:.3f} after normalising; index made orthogonal to it)", flush=True)
    batch = QUICK_BATCH if quick else BATCH
    stream = common.Stream(common.question_pool(POOL_BATCHES, seed=1 + int(length), batch=batch))
    log = built["log"]
    new_tokens = QUICK_NEW_TOKENS if quick else NEW_TOKENS
    gen_kwargs = {"max_length": new_tokens + 1, "min_length": new_tokens + 1}  # exactly that many after the start
    sync = common.device_sync(device)
    budget = 10 if quick else 60

    def tensors(b, labels=False):
        out = {k: torch.as_tensor(b[k], dtype=torch.long, device=device) for k in ("input_ids", "attention_mask")}
        if labels:
            out["labels"] = torch.as_tensor(b["labels"], dtype=torch.long, device=device)
        return out

    def train_step(model):
        def step(b):
            model.train()
            model.zero_grad(set_to_none=True)
            with common.autocast(device, precision):
                out = model(**tensors(b, labels=True), reduce_loss=True)
            out.loss.backward()
        return step

    def generate(model, kwargs):
        def call(b):
            model.eval()
            with torch.no_grad(), common.autocast(device, precision):
                return model.generate(**tensors(b), **gen_kwargs, **kwargs)
        return call

    for key, name, head, kwargs, target in PLAN:
        if key not in keys:
            continue
        full_name = f"{name}, {label}"
        ours, original = built["ours"][head], built["original"][head]
        items = batch * new_tokens if kwargs is not None else batch * N_DOCS
        try:
            make = (lambda m: train_step(m)) if kwargs is None else (lambda m: generate(m, kwargs))
            m_ours, m_orig, stats = common.time_case(make(ours), make(original), stream, log, quick, budget,
                                                     check_ids=kwargs is not None, notes=notes, name=full_name,
                                                     sync=sync)
            row = common.case(full_name, m_ours, m_orig, target=target, items=items,
                              items_unit="passages" if kwargs is None else "tokens",
                              note=common.padding_note(stats, spec["max_combined_length"]) or None,
                              length=length, key=key, **stats)
        except Exception as err:  # one case failing leaves the others' rows
            traceback.print_exc()
            row = common.failed_case(full_name, err, target=target)
            stats = {}
        cases.append(row)
        rows.append(dict(row, _key=key, _length=length, _stats=stats))
        print(json.dumps({k: row.get(k) for k in ("name", "ours_s", "original_s", "ratio", "target", "hit_rate")}),
              flush=True)
    if stream.wrapped:
        notes.append(f"{label}: the question pool ran out and was reused (some timed batches repeated)")
    del built
    gc.collect()


def _comparison_table(rows: list[dict]) -> dict:
    out = []
    for row in rows:
        stats = row.get("_stats") or {}
        length = row["_length"]
        pad = f"{stats['padded_mean']:.0f} / {LENGTHS[length]['max_combined_length']}" if stats else "—"
        hits = f"{stats['hit_rate']:.0%}" if stats.get("hit_rate") is not None else "—"
        target = "" if row.get("target") is None else f">= {row['target']:g}x"
        met = "not run" if row.get("error") else (
            "" if row.get("target") is None or row.get("met") is None else ("met" if row["met"] else "**missed**"))
        fmt = lambda v: "—" if v is None else f"{v:.3f} s"  # noqa: E731
        ratio = "—" if row.get("ratio") is None else f"{row['ratio']:.2f}x"
        previous = PREVIOUS.get(row["_key"]) if length == "300" else None
        out.append([row["name"].rsplit(", contexts", 1)[0], length, pad, hits, fmt(row.get("ours_s")),
                    fmt(row.get("original_s")), ratio, target, met,
                    "—" if previous is None else f"{previous:.2f}x"])
    return {
        "title": "PyTorch: ours vs the original, by context length",
        "columns": ["case", "max_combined_length", "padded length ours / original", "ours' token-cache hits",
                    "ours", "original", "ratio", "target", "result",
                    "previous run (c20f845: transformers 4.57.6, one fixed batch, other passages)"],
        "rows": out,
    }


def _versions() -> str:
    from importlib import metadata

    def v(*dists):
        for dist in dists:
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return "not installed"

    return (f"ours: rag-twin {v('rag-twin')} (rag_pt) on torch {v('torch')}; original: transformers "
            f"{v('transformers')} PyTorch RAG classes on the same torch; numpy {v('numpy')}, tokenizers "
            f"{v('tokenizers')}, faiss-cpu {v('faiss-cpu')}, datasets {v('datasets')}; tensorflow "
            f"{v('tensorflow', 'tensorflow-cpu')} with keras {v('keras')} installed, not imported (USE_TF=0); "
            f"python {sys.version.split()[0]}")


def run(quick: bool = False, device: str = "cpu", precision: str = "float32", size: str = "small",
        d_model: int = 256, layers: int = 2, n_passages=None, threads=None, lengths=None, cases=None,
        **_ignored) -> dict:
    """`lengths`: of "300", "128" (default both; --quick: "128"); `cases`: of CASE_KEYS (default all)."""
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)  # on a shared machine, one thread avoids OpenMP barrier stalls
    device = common.resolve_device(device)
    common.torch_dtype(precision)  # validates the name
    if cases is not None:
        unknown = sorted(set(cases) - set(CASE_KEYS))
        if unknown:
            raise ValueError(f"unknown PyTorch case(s) {unknown}: choose from {list(CASE_KEYS)}")
    keys = tuple(cases) if cases is not None else (QUICK_CASES if quick else CASE_KEYS)
    if lengths is None:
        lengths = ["128"] if quick else (["300", "128"] if d_model == 256 else ["300"])
    unknown = sorted(set(lengths) - set(LENGTHS))
    if unknown:
        raise ValueError(f"unknown context length(s) {unknown}: choose from {list(LENGTHS)}")
    notes = ["Versions — " + _versions()]
    if device.startswith("cuda"):
        # For both implementations alike: on an H200 (torch 2.11) the cuDNN attention backend rebuilt
        # its plans erratically under bf16 autocast (one train step 35 ms to 2 s, call to call);
        # without it, flash/efficient attention gives steady times (benchmarks/diag_cuda_bf16.py).
        torch.backends.cuda.enable_cudnn_sdp(False)
        notes.append("cuDNN scaled-dot-product attention disabled for both sides (erratic plan rebuilds under bf16)")
    n = n_passages or (QUICK_N_PASSAGES if quick else N_PASSAGES)
    cases_out, rows = [], []
    for length in lengths:
        _run_length(length, n, d_model, layers, quick, device, precision, keys, cases_out, rows, notes)
    if not any("ids differ" in note for note in notes):
        notes.append("Same work: on every generate case's check batch (the warm-up call) ours and the original "
                     "generated the same ids.")
    notes += [
        "Padding: ours pads each batch's contexts to its longest context; the original pads every context to "
        "max_combined_length (300, or 128 for the short passages). With the 60-100-word passages many contexts "
        "reach 300 tokens, so ours pads to ~300 too; the short case shows the difference.",
        "Inputs: every call gets a question batch no earlier call saw; the index vectors are orthogonal to the "
        "random question encoder's mean direction, so retrieval varies with the question. Token-cache hits: the "
        "share of the passages retrieved in the timed calls that ours' retriever had tokenized in an earlier call "
        "of the same context length (the original keeps no such cache).",
        "Train steps: model.train(), zero_grad, forward with labels (reduce_loss=True), backward; no optimizer "
        "step (the same for both).",
    ]
    if cases is not None:
        notes.append("Cases run: " + ", ".join(k for k in CASE_KEYS if k in keys) + " (`cases`); the others not run.")
    return common.suite_result(
        "pt", cases_out, notes=notes, tables=[_comparison_table(rows)],
        config={"batch": QUICK_BATCH if quick else BATCH, "n_docs": N_DOCS, "d_model": d_model,
                "layers": f"{layers}+{layers}", "vocab": _tokenizer().vocab_size, "passages": n,
                "new_tokens": QUICK_NEW_TOKENS if quick else NEW_TOKENS, "label_tokens": LABEL_TOKENS,
                "max_combined_length": " and ".join(str(LENGTHS[x]["max_combined_length"]) for x in lengths),
                "device": device, "precision": precision, "size": size,
                "environment": f"main (transformers {transformers.__version__}, torch {torch.__version__})"},
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=common.PRECISIONS)
    parser.add_argument("--passages", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--lengths", default=None, help="comma-separated: 300,128 (default: both; --quick: 128)")
    parser.add_argument("--cases", default=None, help=f"comma-separated, of {','.join(CASE_KEYS)} (default: all)")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, device=args.device, precision=args.precision, n_passages=args.passages,
                 threads=args.threads, lengths=args.lengths.split(",") if args.lengths else None,
                 cases=args.cases.split(",") if args.cases else None)
    from .report import case_table, generic_table

    print("\n".join(case_table(result["cases"])))
    for table in result.get("tables", []):
        print()
        print("\n".join(generic_table(table)))
    for note in result["notes"]:
        print("note:", note)


if __name__ == "__main__":
    main()

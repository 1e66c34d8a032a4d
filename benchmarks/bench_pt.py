"""PyTorch models benchmark: ours (`rag_pt`) vs transformers' RAG on the same weights, inputs and index.

Sizes: batch 8, n_docs 5, a BART generator with d_model 256 and 2+2 layers, a
30,522-token vocabulary (the MiniLM WordPiece vocabulary serves as both tokenizers), 20,000
passages of 60-100 words in a flat inner-product index, 20 generated tokens, a DPR question
encoder of the same width. Both sides use their own retriever on the same `custom` index files
(ours: rag_core.RagRetriever; theirs: transformers.RagRetriever), with `max_combined_length` at
its default (300): the original pads every context to it, ours to the longest context.

Cases (ratio = original seconds / ours; targets):
  train step RAG-Token / RAG-Sequence: forward + backward with retrieval        >= 1.5x
  RAG-Token generate, greedy and beam 4 (20 new tokens)                         >= 2x
  RAG-Sequence generate, beam 4 (thorough decoding, 20 new tokens)              >= 4x

    python -m benchmarks.bench_pt              # full size
    python -m benchmarks.bench_pt --quick      # 2,000 passages, fewer repeats
    python -m benchmarks.bench_pt --device cuda --precision bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow otherwise; this suite is torch only
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from . import common  # noqa: E402

from .common import BATCH, LABEL_TOKENS, N_DOCS, N_PASSAGES, NEW_TOKENS, QUICK_N_PASSAGES, VOCAB_ENV  # noqa: E402,F401
from .common import bench_rag_config as _config  # noqa: E402
from .common import bench_tokenizer as _tokenizer  # noqa: E402


def _passages(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n passages of 90-100 words like wiki_dpr's 100-word passages: the alphabetic words of Python's own
    language reference (no download; its code and symbols would double the tokens per word)."""
    return common.reference_passages(n, 90, 100, alphabetic=True, seed=seed)


def _index(n: int, dim: int) -> str:
    """The passages with random vectors, in the original's `custom` layout (cached under _work/)."""
    return common.bench_passages_index("kb-words", _passages, n, dim)


def _models(config, device: str, dtype):
    """(ours, original) for each head, same weights: ours built at random, saved, loaded by transformers."""
    import torch
    import transformers

    import rag_pt
    from rag_core import RagRetriever

    tok = _tokenizer()
    ours_retriever = RagRetriever(config, tok, tok)
    original_retriever = transformers.RagRetriever(transformers.RagConfig(**config.to_dict()), tok, tok)
    pairs = {}
    for head in ("RagTokenForGeneration", "RagSequenceForGeneration"):
        torch.manual_seed(0)
        ours = getattr(rag_pt, head)(config)
        with tempfile.TemporaryDirectory() as folder:
            ours.save_pretrained(folder)
            original = getattr(transformers, head).from_pretrained(folder)
        ours.set_retriever(ours_retriever)
        original.set_retriever(original_retriever)
        pairs[head] = (ours.to(device=device, dtype=dtype), original.to(device=device, dtype=dtype))
    return pairs


def _inputs(device: str):
    import numpy as np

    from tests.harness.retrieval import QUESTIONS

    tok = _tokenizer()
    questions = [QUESTIONS[i % len(QUESTIONS)] + f" number {i}" for i in range(BATCH)]
    q = tok(questions, padding=True, return_tensors="pt")
    rng = np.random.default_rng(0)
    answers = [" ".join(rng.choice(["paris", "berlin", "python", "river", "capital", "state", "code"], LABEL_TOKENS))
               for _ in range(BATCH)]
    labels = tok(answers, padding="max_length", truncation=True, max_length=LABEL_TOKENS, return_tensors="pt")["input_ids"]
    return {"input_ids": q["input_ids"].to(device), "attention_mask": q["attention_mask"].to(device)}, labels.to(device)


def run(quick: bool = False, device: str = "cpu", precision: str = "float32", size: str = "small",
        d_model: int = 256, layers: int = 2, n_passages=None, threads=None, **_ignored) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)  # on a shared machine, one thread avoids OpenMP barrier stalls
    device = common.resolve_device(device)
    dtype = common.torch_dtype(precision)
    sync = common.device_sync(device)
    notes = []
    if device.startswith("cuda"):
        # For both implementations alike: on an H200 (torch 2.11) the cuDNN attention backend rebuilt
        # its plans erratically under bf16 autocast (one train step 35 ms to 2 s, call to call);
        # without it, flash/efficient attention gives steady times (benchmarks/diag_cuda_bf16.py).
        torch.backends.cuda.enable_cudnn_sdp(False)
        notes.append("cuDNN scaled-dot-product attention disabled for both sides (erratic plan rebuilds under bf16)")
    n = n_passages or (QUICK_N_PASSAGES if quick else N_PASSAGES)
    config = _config(d_model, layers, _index(n, d_model))
    pairs = _models(config, device, torch.float32)  # weights stay float32; bfloat16 runs under autocast
    questions, labels = _inputs(device)
    gen_kwargs = {"max_length": NEW_TOKENS + 1, "min_length": NEW_TOKENS + 1}  # exactly 20 tokens after the start

    def train_step(model):
        def step():
            model.train()
            model.zero_grad(set_to_none=True)
            out = model(**questions, labels=labels, reduce_loss=True)
            out.loss.backward()
        return step

    def generate(model, **kwargs):
        def call():
            model.eval()
            with torch.no_grad():
                return model.generate(**questions, **gen_kwargs, **kwargs)
        return call

    cases = []
    plan = [
        ("train step RAG-Token (fwd+bwd, retrieval)", "RagTokenForGeneration", train_step, {}, 1.5, BATCH * N_DOCS, "passages"),
        ("train step RAG-Sequence (fwd+bwd, retrieval)", "RagSequenceForGeneration", train_step, {}, 1.5, BATCH * N_DOCS, "passages"),
        ("RAG-Token generate greedy", "RagTokenForGeneration", generate, {"num_beams": 1}, 2.0, BATCH * NEW_TOKENS, "tokens"),
        ("RAG-Token generate beam 4", "RagTokenForGeneration", generate, {"num_beams": 4}, 2.0, BATCH * NEW_TOKENS, "tokens"),
        ("RAG-Sequence generate beam 4", "RagSequenceForGeneration", generate, {"num_beams": 4}, 4.0, BATCH * NEW_TOKENS, "tokens"),
    ]
    for name, head, make, kwargs, target, items, unit in plan:
        ours, original = pairs[head]
        try:
            if make is generate:
                # same ids, or the timing compares different work
                a, b = make(ours, **kwargs)(), make(original, **kwargs)()
                if not torch.equal(a.cpu(), b.cpu()):
                    notes.append(f"{name}: ids differ from the original's ({a.shape} vs {b.shape})")
                fn_ours, fn_orig = make(ours, **kwargs), make(original, **kwargs)
            else:
                fn_ours, fn_orig = make(ours), make(original)
            with common.autocast(device, precision) if precision != "float32" else _null():
                m_ours, m_orig = common.compare(fn_ours, fn_orig, quick=quick, budget_s=30 if quick else 120, sync=sync)
            cases.append(common.case(name, m_ours, m_orig, target=target, items=items, items_unit=unit))
        except Exception as err:  # one case failing leaves the others' rows
            cases.append(common.failed_case(name, err, target=target))
        print(json.dumps({k: cases[-1].get(k) for k in ("name", "ours_s", "original_s", "ratio", "target")}), flush=True)
    return common.suite_result(
        "pt", cases, notes=notes,
        config={"batch": BATCH, "n_docs": N_DOCS, "d_model": d_model, "layers": f"{layers}+{layers}",
                "vocab": config.generator.vocab_size, "passages": n, "new_tokens": NEW_TOKENS,
                "label_tokens": LABEL_TOKENS, "max_combined_length": config.max_combined_length,
                "device": device, "precision": precision, "size": size},
    )


def _null():
    import contextlib

    return contextlib.nullcontext()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=common.PRECISIONS)
    parser.add_argument("--passages", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, device=args.device, precision=args.precision, n_passages=args.passages,
                 threads=args.threads)
    for row in result["cases"]:
        ratio = f"{row['ratio']:.2f}x" if row.get("ratio") else row.get("error", "-")
        print(f"{row['name']:<48} ours {row['ours_s'] or float('nan'):8.3f}s  original "
              f"{row['original_s'] or float('nan'):8.3f}s  ratio {ratio}  (target {row['target']}x)")
    for note in result["notes"]:
        print("note:", note)


if __name__ == "__main__":
    main()

"""Shared pieces of the bad-input suite: the table of invalid model inputs (framework-neutral, numpy)
and a fingerprint of a folder tree, to show that a refused call changed nothing on disk.

A model case builds its keyword arguments from valid numpy inputs for batch 2 x 3 passages
(`BASE`); each framework converts the arrays to its tensors and expects the same library error
class and the same message pattern, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

from rag_core.errors import RagInputError

BATCH, N_DOCS, LENGTH, TARGET = 2, 3, 12, 4
MAX_POSITIONS = 128  # the tiny BART's learned positions and the tiny DPR's (tests.harness.configs)


def base_inputs() -> dict:
    """Valid precomputed contexts and targets (no retriever needed): ids int32, scores float32."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 900, size=(BATCH * N_DOCS, LENGTH)).astype(np.int32)
    return {
        "context_input_ids": ids,
        "context_attention_mask": np.ones_like(ids),
        "doc_scores": rng.standard_normal((BATCH, N_DOCS)).astype(np.float32),
        "labels": rng.integers(5, 900, size=(BATCH, TARGET)).astype(np.int32),
        "decoder_input_ids": rng.integers(5, 900, size=(BATCH, TARGET)).astype(np.int32),
        "input_ids": rng.integers(1000, 2000, size=(BATCH, 7)).astype(np.int32),
    }


@dataclass(frozen=True)
class Case:
    """One invalid call: `entry` ("forward" or "generate"), `head` ("token", "sequence" or "model": the
    bare RagModel), the inputs kept from `base_inputs()` and what replaces or adds to them."""

    id: str
    match: str
    entry: str = "forward"
    head: str = "token"
    keep: tuple = ("context_input_ids", "context_attention_mask", "doc_scores", "labels")
    change: Callable[[dict], dict] = field(default=lambda base: {})
    error: type = RagInputError

    def inputs(self) -> dict:
        base = base_inputs()
        kwargs = {name: base[name] for name in self.keep}
        kwargs.update(self.change(base))
        return kwargs

    def param(self):
        return pytest.param(self, id=self.id)


CONTEXT = ("context_input_ids", "context_attention_mask", "doc_scores")
ALL = CONTEXT + ("labels", "input_ids")


def _f(x):
    return x.astype(np.float32)


# Forward passes (`model(**kwargs)`); each input is one mistake a user makes.
FORWARD = [
    Case("input_ids-rank-1", r"`input_ids` must have shape \(batch_size, question_length\), got rank 1",
         keep=ALL, change=lambda b: {"input_ids": b["input_ids"][0]}),
    Case("input_ids-float", r"`input_ids` must hold integer token ids, got dtype float32",
         keep=ALL, change=lambda b: {"input_ids": _f(b["input_ids"])}),
    Case("input_ids-batch-3-vs-doc_scores-2", r"`doc_scores` has 2 rows but `input_ids` has 3",
         keep=ALL, change=lambda b: {"input_ids": np.concatenate([b["input_ids"], b["input_ids"][:1]])}),
    Case("input_ids-longer-than-question-encoder-positions",
         r"`input_ids` are 200 tokens long but the question encoder handles at most 128",
         keep=ALL, change=lambda b: {"input_ids": np.ones((BATCH, 200), np.int32)}),
    Case("attention_mask-shape-differs", r"`attention_mask` has shape \(2, 6\) but `input_ids` has shape \(2, 7\)",
         keep=ALL, change=lambda b: {"attention_mask": np.ones((BATCH, 6), np.int32)}),
    Case("attention_mask-complex", r"`attention_mask` must hold a 0/1 mask .*got dtype complex64",
         keep=ALL, change=lambda b: {"attention_mask": np.ones((BATCH, 7), np.complex64)}),
    Case("labels-batch-3", r"`labels` has 3 rows but `doc_scores` has 2",
         change=lambda b: {"labels": np.concatenate([b["labels"], b["labels"][:1]])}),
    Case("labels-float", r"`labels` must hold integer token ids, got dtype float32",
         change=lambda b: {"labels": _f(b["labels"])}),
    Case("labels-rank-3", r"`labels` must have shape \(batch_size, target_length\), got rank 3",
         change=lambda b: {"labels": b["labels"][:, :, None]}),
    Case("labels-empty", r"`labels` has an empty dimension, shape \(2, 0\)",
         change=lambda b: {"labels": b["labels"][:, :0]}),
    Case("labels-length-differs-from-decoder_input_ids",
         r"`labels` are 4 tokens long but `decoder_input_ids` 3",
         change=lambda b: {"decoder_input_ids": b["decoder_input_ids"][:, :3]}),
    Case("decoder_input_ids-batch-1", r"`decoder_input_ids` has 1 rows but `doc_scores` has 2", head="model",
         keep=CONTEXT, change=lambda b: {"decoder_input_ids": b["decoder_input_ids"][:1]}),
    Case("decoder_input_ids-float", r"`decoder_input_ids` must hold integer token ids, got dtype float32",
         head="model", keep=CONTEXT, change=lambda b: {"decoder_input_ids": _f(b["decoder_input_ids"])}),
    Case("decoder_input_ids-longer-than-generator-positions",
         r"`decoder_input_ids` are 200 tokens long but the generator handles at most 128", head="model",
         keep=CONTEXT, change=lambda b: {"decoder_input_ids": np.ones((BATCH, 200), np.int32)}),
    Case("decoder_attention_mask-shape-differs",
         r"`decoder_attention_mask` has shape \(2, 5\) but `decoder_input_ids` has shape \(2, 4\)", head="sequence",
         keep=CONTEXT + ("decoder_input_ids",), change=lambda b: {"decoder_attention_mask": np.ones((BATCH, 5), np.int32)}),
    Case("context_input_ids-float", r"`context_input_ids` must hold integer token ids, got dtype float32",
         change=lambda b: {"context_input_ids": _f(b["context_input_ids"])}),
    Case("context_input_ids-rank-3",
         r"`context_input_ids` must have shape \(batch_size \* n_docs, context_length\), got rank 3",
         change=lambda b: {"context_input_ids": b["context_input_ids"].reshape(BATCH, N_DOCS, LENGTH),
                           "context_attention_mask": None}),
    Case("context_input_ids-longer-than-generator-positions",
         r"`context_input_ids` are 200 tokens long but the generator handles at most 128",
         change=lambda b: {"context_input_ids": np.ones((BATCH * N_DOCS, 200), np.int32),
                           "context_attention_mask": np.ones((BATCH * N_DOCS, 200), np.int32)}),
    Case("context_attention_mask-shape-differs",
         r"`context_attention_mask` has shape \(6, 11\) but `context_input_ids` has shape \(6, 12\)",
         change=lambda b: {"context_attention_mask": b["context_attention_mask"][:, :-1]}),
    Case("context-empty-batch", r"has an empty dimension, shape \(0, ",
         change=lambda b: {"context_input_ids": b["context_input_ids"][:0],
                           "context_attention_mask": b["context_attention_mask"][:0],
                           "doc_scores": b["doc_scores"][:0], "labels": b["labels"][:0]}),
    Case("doc_scores-int", r"`doc_scores` must hold float scores, got dtype int32",
         change=lambda b: {"doc_scores": b["doc_scores"].astype(np.int32)}),
    Case("doc_scores-rank-3", r"`doc_scores` must have shape \(batch_size, n_docs\), got rank 3",
         change=lambda b: {"doc_scores": b["doc_scores"][:, :, None]}),
    Case("doc_scores-bool", r"`doc_scores` must hold float scores, got dtype bool",
         change=lambda b: {"doc_scores": b["doc_scores"] > 0}),
    Case("n_docs-0", r"n_docs must be a positive integer, got 0", change=lambda b: {"n_docs": 0}),
    Case("n_docs-str", r"n_docs must be a positive integer, got '3'", change=lambda b: {"n_docs": "3"}),
    Case("n_docs-float", r"n_docs must be a positive integer, got 3.0", head="sequence", change=lambda b: {"n_docs": 3.0}),
    Case("n_docs-list", r"n_docs must be a positive integer, got \[3\]", change=lambda b: {"n_docs": [3]}),
    Case("n_docs-bool", r"n_docs must be a positive integer, got True", head="model", keep=CONTEXT,
         change=lambda b: {"n_docs": True}),
]

# `generate(**kwargs)` on given contexts.
GENERATE = [
    Case("num_beams-0", r"num_beams must be an integer >= 1, got 0", "generate", keep=CONTEXT,
         change=lambda b: {"num_beams": 0}),
    Case("num_beams-float", r"num_beams must be an integer >= 1, got 2.5", "generate", keep=CONTEXT,
         change=lambda b: {"num_beams": 2.5}),
    Case("num_return_sequences-above-num_beams", r"num_return_sequences=3 exceeds num_beams=2", "generate",
         keep=CONTEXT, change=lambda b: {"num_beams": 2, "num_return_sequences": 3}),
    Case("max_length-1", r"max_length must be an integer >= 2, got 1", "generate", keep=CONTEXT,
         change=lambda b: {"max_length": 1}),
    Case("min_length-above-max_length", r"min_length=10 exceeds max_length=5", "generate", keep=CONTEXT,
         change=lambda b: {"min_length": 10, "max_length": 5}),
    Case("max_new_tokens-0", r"max_new_tokens must be an integer >= 1, got 0", "generate", keep=CONTEXT,
         change=lambda b: {"max_new_tokens": 0}),
    Case("max_length-beyond-generator-positions", r"generating up to 500 tokens .* exceeds the 128 positions",
         "generate", keep=CONTEXT, change=lambda b: {"max_length": 500}),
    Case("min_new_tokens-above-max_new_tokens", r"min_new_tokens=9 exceeds max_new_tokens=3", "generate",
         keep=CONTEXT, change=lambda b: {"min_new_tokens": 9, "max_new_tokens": 3}),
    Case("top_p-1.5", r"top_p must be a finite number in \(0.0, 1.0\], got 1.5", "generate", keep=CONTEXT,
         change=lambda b: {"do_sample": True, "top_p": 1.5}),
    Case("temperature-0-when-sampling", r"temperature must be a finite number in \(0.0, inf\), got 0", "generate",
         keep=CONTEXT, change=lambda b: {"do_sample": True, "temperature": 0}),
    Case("do_sample-str", r"do_sample must be True or False, got 'yes'", "generate", keep=CONTEXT,
         change=lambda b: {"do_sample": "yes"}),
    Case("no_repeat_ngram_size-negative", r"no_repeat_ngram_size must be an integer >= 0, got -1", "generate",
         keep=CONTEXT, change=lambda b: {"no_repeat_ngram_size": -1}),
    Case("repetition_penalty-0", r"repetition_penalty must be a finite number in \(0.0, inf\), got 0.0", "generate",
         keep=CONTEXT, change=lambda b: {"repetition_penalty": 0.0}),
    Case("length_penalty-nan", r"length_penalty must be a finite number in \(-inf, inf\), got nan", "generate", keep=CONTEXT,
         change=lambda b: {"num_beams": 2, "length_penalty": float("nan")}),
    Case("early_stopping-str", r"early_stopping must be True, False or 'never', got 'soon'", "generate",
         keep=CONTEXT, change=lambda b: {"num_beams": 2, "early_stopping": "soon"}),
    Case("generate-n_docs-negative", r"n_docs must be a positive integer, got -1", "generate", keep=CONTEXT,
         change=lambda b: {"n_docs": -1}),
    Case("generate-doc_scores-rank-1", r"`doc_scores` must have shape \(batch_size, n_docs\), got rank 1",
         "generate", keep=CONTEXT, change=lambda b: {"doc_scores": b["doc_scores"].reshape(-1)}),
    Case("generate-context_input_ids-float", r"`context_input_ids` must hold integer token ids", "generate",
         keep=CONTEXT, change=lambda b: {"context_input_ids": _f(b["context_input_ids"])}),
    Case("generate-input_ids-batch-differs", r"`doc_scores` has 2 rows but `input_ids` has 1", "generate",
         keep=CONTEXT + ("input_ids",), change=lambda b: {"input_ids": b["input_ids"][:1]}),
    Case("sequence-num_return_sequences-0", r"num_return_sequences must be an integer >= 1, got 0", "generate",
         head="sequence", keep=CONTEXT, change=lambda b: {"num_return_sequences": 0}),
    Case("sequence-num_beams-str", r"num_beams must be an integer >= 1, got '2'", "generate", head="sequence",
         keep=CONTEXT, change=lambda b: {"num_beams": "2"}),
    Case("sequence-min_length-above-max_length", r"min_length=30 exceeds max_length=8", "generate",
         head="sequence", keep=CONTEXT, change=lambda b: {"min_length": 30, "max_length": 8}),
    Case("top_k-negative", r"top_k must be an integer >= 0, got -5", "generate", keep=CONTEXT,
         change=lambda b: {"do_sample": True, "top_k": -5}),
]

MODEL_CASES = FORWARD + GENERATE


# === Files ===
def tree_digest(root) -> dict:
    """`{relative path: sha256}` of every file under `root` (folders as `path/`): equal before and after
    means nothing was written, moved or removed."""
    root = os.fspath(root)
    digest = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        digest[rel + "/"] = ""
        for name in sorted(files):
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def assert_raises_named(call: Callable[[], Any], error: type, match: str):
    """`call()` raises exactly a subclass of `error` whose message matches `match` (re.search)."""
    with pytest.raises(error, match=match) as info:
        call()
    return info.value

"""Tiny retrieval fixtures: the harness passages on disk with a flat faiss index, and retrievers over them.

The layout is the original's `custom` one (`passages/` written by `Dataset.save_to_disk` and
`index.faiss`), so transformers' `RagRetriever` can read the same files as ours.

    >>> passages_dir = write_tiny_passages(tmp_path / "kb")
    >>> config = tiny_rag_config("dpr", "bart", **tiny_index_paths(passages_dir))
    >>> retriever = make_tiny_retriever(config, question_encoder_tokenizer(), bart_tokenizer())
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .configs import HIDDEN
from .passages import PASSAGES

SEED = 1234


def tiny_embeddings(n: int = len(PASSAGES), dim: int = HIDDEN, seed: int = SEED) -> np.ndarray:
    """Deterministic random passage vectors, float32 (n, dim)."""
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def tiny_question_vectors(batch_size: int = 2, dim: int = HIDDEN, seed: int = 7, near: Optional[Sequence[int]] = None) -> np.ndarray:
    """Question vectors; with `near`, question i is passage near[i]'s vector plus a little noise."""
    rng = np.random.default_rng(seed)
    if near is None:
        return rng.standard_normal((batch_size, dim)).astype(np.float32)
    embeds = tiny_embeddings(dim=dim)
    return (embeds[list(near)] + 0.01 * rng.standard_normal((len(near), dim))).astype(np.float32)


def write_passages(folder: str, passages: Sequence[tuple], embeddings: np.ndarray, faiss_index=None) -> dict:
    """Write `passages/` (save_to_disk) and `index.faiss` (flat inner product unless given); return the paths."""
    import datasets
    import faiss

    os.makedirs(folder, exist_ok=True)
    features = datasets.Features(
        {"title": datasets.Value("string"), "text": datasets.Value("string"), "embeddings": datasets.Sequence(datasets.Value("float32"))}
    )
    dataset = datasets.Dataset.from_dict(
        {"title": [p[0] for p in passages], "text": [p[1] for p in passages], "embeddings": embeddings.tolist()},
        features=features,
    )
    passages_path = os.path.join(folder, "passages")
    dataset.save_to_disk(passages_path)
    if faiss_index is None:
        faiss_index = faiss.IndexFlatIP(embeddings.shape[1])
        faiss_index.add(embeddings)
    index_path = os.path.join(folder, "index.faiss")
    faiss.write_index(faiss_index, index_path)
    return {"passages_path": passages_path, "index_path": index_path}


def write_tiny_passages(folder) -> str:
    """The harness PASSAGES with `tiny_embeddings()` under `folder`; returns the folder."""
    folder = os.fspath(folder)
    write_passages(folder, PASSAGES, tiny_embeddings())
    return folder


def tiny_index_paths(folder) -> dict:
    """`passages_path` / `index_path` config values for a folder from `write_tiny_passages`."""
    folder = os.fspath(folder)
    return {"passages_path": os.path.join(folder, "passages"), "index_path": os.path.join(folder, "index.faiss")}


def make_tiny_retriever(config, question_encoder_tokenizer, generator_tokenizer, init_retrieval: bool = True):
    """Our `RagRetriever` over the index `config` names (use `tiny_index_paths` to point at the tiny one)."""
    from rag_core import RagRetriever

    return RagRetriever(config, question_encoder_tokenizer, generator_tokenizer, init_retrieval=init_retrieval)


def tiny_question_ids(question_encoder_tokenizer, questions: Sequence[str]) -> np.ndarray:
    """Questions tokenized by the question-encoder tokenizer, padded, int64 (B, Lq)."""
    return question_encoder_tokenizer(list(questions), padding=True, return_tensors="np")["input_ids"].astype(np.int64)


QUESTIONS = ["who is the brother of moses?", "what is the capital of germany?", "who wrote  hamlet", "where is the nile"]


class EmptySlots:
    """Wraps a retriever; its last `slots` slots come back empty (doc id -1), as faiss does when short of hits."""

    def __init__(self, retriever, slots: int = 1):
        self.retriever, self.index, self.slots = retriever, retriever.index, slots

    def __call__(self, *args, **kwargs):
        out = dict(self.retriever(*args, **kwargs))
        out["doc_ids"] = out["doc_ids"].copy()
        out["doc_ids"][:, -self.slots:] = -1
        return out

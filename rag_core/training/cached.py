"""Training on stored retrievals (`--cache_retrieval`, `--extra_train_file`): numpy only.

With a frozen question encoder, a training question retrieves the same passages, with the same
scores, at every step. `CachedRetrieval` retrieves each question once, before training, through
the framework's question encoder (the predictor's `question_vectors` hook, as retrieval
evaluation uses it) and the library's `RagRetriever`, and serves batches of what a step would
have computed itself: `context_input_ids`, `context_attention_mask`, `doc_scores` (the inner
product of the question vector with each retrieved passage's vector, `INVALID_DOC_SCORE` for a
slot the index could not fill) and `labels`.

Examples may come from several sources, each with its own retriever: the run's index for the
training file, another index for `--extra_train_file` (counterfactual augmentation: the same
questions against an edited copy of the knowledge base, with the edited answers). A question asked
in several sources is encoded once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from ..arguments import INVALID_DOC_SCORE
from .data import QAExample, encode_batch, encode_labels


def _pad(rows: Sequence[Sequence[int]], pad_id: int, width: Optional[int] = None) -> np.ndarray:
    width = width if width is not None else max(len(r) for r in rows)
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[:width]
    return out


def _flatten(name: str, rows: Sequence[np.ndarray]) -> dict:
    offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if rows else np.zeros(0, np.int64)
    return {name: flat, f"{name}_offsets": offsets}


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _key(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _folder_files(path: Optional[str]) -> list:
    """Name, size and modification time of the files under `path`: a folder's identity without reading it."""
    if path is None:
        return []
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        stat = os.stat(path)
        return [[path, stat.st_size, stat.st_mtime_ns]]
    found = []
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            stat = os.stat(os.path.join(root, name))
            found.append([os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns])
    return [path, found]


def _model_files(components: Any) -> list:
    """The question encoder's identity: the weight files it was read from."""
    folder = components.checkpoint or components.question_encoder_path
    if folder is None or not os.path.isdir(folder):
        return [str(folder)]
    weights = [n for n in sorted(os.listdir(folder)) if n.endswith((".safetensors", ".bin", ".h5", ".json"))]
    return [os.path.abspath(folder)] + [[n, *_folder_files(os.path.join(folder, n))[0][1:]] for n in weights]


def _tokenizer_identity(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.name_or_path}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive lock on `path` (POSIX `flock`; without fcntl, no lock: a second run computes too)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stored(store: Optional[str], key: str, compute) -> dict:
    """`compute()` (a dict of numpy arrays), or what an earlier run stored under `key` in the folder `store`."""
    if store is None:
        return compute()
    os.makedirs(store, exist_ok=True)
    path = os.path.join(store, f"{key}.npz")
    with _locked(path + ".lock"):
        if os.path.isfile(path):
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        value = compute()
        tmp = f"{path}.tmp{os.getpid()}.npz"
        np.savez(tmp, **value)
        os.replace(tmp, path)
        return value


class CachedRetrieval:
    """Every training example's retrieved contexts and passage scores, computed once (see the module docstring).

    `sources`: `(examples, retriever, index_path)` triples; the examples of all sources are numbered
    one after the other (the indices of `batch`). `predictor.question_vectors(batch)` gives `(B, D)`
    question vectors for a batch of question ids (`input_ids`, `attention_mask`, numpy).

    `store` (a folder, `--retrieval_cache_dir`): question vectors and retrievals are kept there under
    a key of everything they depend on (the question encoder's weight files, the tokenizers, the
    index files, `n_docs`, the context settings, the questions), so another run with the same
    frozen encoder and questions reads them instead of computing them again; runs started together
    wait for the one computing (a file lock).
    """

    def __init__(self, predictor: Any, components: Any, sources: Sequence[tuple], *, n_docs: int,
                 max_source_length: int, max_target_length: Optional[int], batch_size: int = 256,
                 progress: bool = False, store: Optional[str] = None):
        self.components = components
        self.n_docs = int(n_docs)
        self.max_target_length = max_target_length
        self.examples: list[QAExample] = [e for examples, *_ in sources for e in examples]
        self.pad_id = components.generator_tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = components.config.generator.pad_token_id
        questions = sorted({e.question for e in self.examples}, key=lambda q: (len(q), q))
        encoder_key = _key("vectors", type(predictor).__module__, _model_files(components),
                           _tokenizer_identity(components.question_tokenizer),
                           getattr(components.config, "question_encoder_pooling", None), max_source_length, questions)
        stored = _stored(store, encoder_key, lambda: self._encode(predictor, questions, max_source_length, batch_size,
                                                                 progress))
        row = {q: i for i, q in enumerate(questions)}
        vectors, ids = stored["vectors"], _unflatten(stored["ids"], stored["ids_offsets"])

        self.context_rows: list[list[int]] = []  # n_docs rows per example, unpadded
        scores = []
        for examples, retriever, index_path in sources:
            config = components.config
            key = _key("retrieval", encoder_key, _folder_files(index_path),
                       _tokenizer_identity(components.generator_tokenizer), self.n_docs, config.title_sep, config.doc_sep,
                       config.max_combined_length, getattr(config.generator, "prefix", None),
                       [e.question for e in examples])
            part = _stored(store, key, lambda: self._retrieve(
                retriever, [row[e.question] for e in examples], vectors, ids, batch_size))
            self.context_rows += [r.tolist() for r in _unflatten(part["rows"], part["rows_offsets"])]
            scores.append(part["doc_scores"])
        self.doc_scores = np.concatenate(scores).astype(np.float32)

    def _encode(self, predictor, questions: list[str], max_source_length: int, batch_size: int, progress: bool) -> dict:
        """One vector per distinct question, in batches of questions of similar length (less padding)."""
        from tqdm.auto import tqdm

        components = self.components
        vectors, ids = [], []
        with tqdm(total=len(questions), desc="encoding training questions", unit="question", disable=not progress,
                  dynamic_ncols=True, leave=False) as bar:
            for start in range(0, len(questions), batch_size):
                chunk = [QAExample(q, ()) for q in questions[start : start + batch_size]]
                batch = encode_batch(components.question_tokenizer, components.generator_tokenizer, chunk,
                                     max_source_length=max_source_length, max_target_length=None,
                                     decoder_start_token_id=components.decoder_start_token_id, with_labels=False)
                vectors.append(np.asarray(predictor.question_vectors(batch), dtype=np.float32))
                ids += [row[mask.astype(bool)] for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
                bar.update(len(chunk))
        return {"vectors": np.concatenate(vectors), **_flatten("ids", ids)}

    def _retrieve(self, retriever, rows: list[int], vectors: np.ndarray, ids: list, batch_size: int) -> dict:
        prefix = getattr(self.components.config.generator, "prefix", None)
        question_pad = self.components.question_tokenizer.pad_token_id or 0
        contexts, scores = [], []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            question_ids = _pad([ids[i] for i in chunk], question_pad)
            question_vectors = vectors[chunk]
            out = retriever(question_ids, question_vectors, prefix=prefix, n_docs=self.n_docs, return_tensors="np")
            doc_ids = np.asarray(out["doc_ids"])
            embeds = np.asarray(out["retrieved_doc_embeds"], dtype=np.float32)
            chunk_scores = np.einsum("bd,bnd->bn", question_vectors, embeds).astype(np.float32)
            chunk_scores[doc_ids < 0] = INVALID_DOC_SCORE
            scores.append(chunk_scores)
            mask = np.asarray(out["context_attention_mask"]).astype(bool)
            contexts += [row[m] for row, m in zip(np.asarray(out["context_input_ids"]), mask)]
        return {"doc_scores": np.concatenate(scores).astype(np.float32), **_flatten("rows", contexts)}

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: Sequence[int]) -> dict:
        """numpy inputs of the examples `indices`: contexts padded to the batch's longest row, `doc_scores`
        `(B, n_docs)` float32, and `labels` as `encode_batch` makes them."""
        indices = np.asarray(indices, dtype=np.int64)
        flat = (indices[:, None] * self.n_docs + np.arange(self.n_docs)).reshape(-1)
        contexts = _pad([self.context_rows[i] for i in flat], self.pad_id)
        labels = encode_labels(self.components.generator_tokenizer, [self.examples[i] for i in indices],
                               max_target_length=self.max_target_length,
                               decoder_start_token_id=self.components.decoder_start_token_id)
        return {
            "context_input_ids": contexts,
            "context_attention_mask": (contexts != self.pad_id).astype(np.int64),
            "doc_scores": self.doc_scores[indices],
            "labels": labels,
        }


def cached_training_data(args, components: Any, predictor: Any, train_examples: Sequence[QAExample], load_examples,
                         progress: bool = False) -> Optional[CachedRetrieval]:
    """The run's `CachedRetrieval` (None without `--cache_retrieval`): the training examples against the
    run's index, then those of `--extra_train_file` (read by `load_examples(path)`) against `--extra_index_path`."""
    if not getattr(args, "cache_retrieval", False):
        return None
    config = components.config
    sources = [(list(train_examples), components.retriever, args.index_path or config.index_path or config.passages_path)]
    if getattr(args, "extra_train_file", None) is not None:
        sources.append((load_examples(args.extra_train_file), components.retriever_for(args.extra_index_path),
                        args.extra_index_path))
    return CachedRetrieval(predictor, components, sources, n_docs=config.n_docs,
                           max_source_length=args.max_source_length, max_target_length=args.max_target_length,
                           progress=progress, store=getattr(args, "retrieval_cache_dir", None))

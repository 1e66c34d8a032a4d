"""`RagRetriever`: question vectors in, passages and generator inputs out. numpy only.

Constructed and called as the original (`RagRetriever(config, question_encoder_tokenizer,
generator_tokenizer, index=None, init_retrieval=True)`, `from_pretrained`, `save_pretrained`,
`retrieve`, `__call__`, `set_ctx_encoder_tokenizer`). Differences a user may notice:

- contexts are padded to the longest row of the batch, not to `max_combined_length`; the ids of
  each row equal the original's (its string format, tokenized whole) minus that padding;
- passages are tokenized once and cached (see `rag_core.contexts`), so repeated calls are fast;
- a slot where faiss found no neighbour keeps doc id -1 (zero embedding, empty passage) instead of
  silently becoming a document; models give it zero probability;
- nothing is downloaded: `exact` / `compressed` / `legacy` read local files;
- bad input raises an error naming the problem; calls are safe from several threads, and so is
  replacing the index (`retriever.index = other`) while they run: each call uses the index it
  started with for search, passages and caching, and passages of a replaced index never reach
  the cache of its successor;
- a retriever travels: `pickle` (a `multiprocessing` or `DataLoader` worker) and `copy.deepcopy`
  (transformers' `from_pretrained` copies its arguments) carry the configuration, the tokenizers
  and the index's file locations, never the loaded index or passages. A pickled copy loads the
  index from its files on first use; a deep copy shares the loaded index (read-only).

Example:
    >>> retriever = RagRetriever(config, question_tokenizer, generator_tokenizer)   # index from config
    >>> batch = retriever(question_input_ids, question_hidden_states)               # numpy arrays
    >>> batch["context_input_ids"].shape, batch["doc_ids"].shape
    ((6, 41), (2, 3))
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Any, Optional

import numpy as np

from . import compat
from .arguments import check_retriever_options, resolve
from .contexts import ContextAssembler, ContextInputError, contexts_from_passages
from .index import (
    CustomIndex,
    Index,
    RetrievalInputError,
    check_n_docs,
    check_question_hidden_states,
    index_from_config,
)
from .index.base import on_one_version


class RagRetriever:
    """Retrieves passages for question vectors and formats them as generator inputs (see module docstring).

    Args:
        config: a `RagConfig`; `index_name`, `passages_path`, `index_path`, `retrieval_vector_size`,
            `retrieval_batch_size`, `n_docs`, `title_sep`, `doc_sep`, `max_combined_length`,
            `hnsw_ef_search`, `ivf_nprobe` are read.
        question_encoder_tokenizer: decodes question ids back to text (the original's format).
        generator_tokenizer: tokenizes the contexts.
        index: an `Index` to use instead of the one the config describes.
        init_retrieval: load the index now (else call `init_retrieval()` later).

    Tokenized passages are cached in `retriever.contexts` (a `ContextAssembler`): at most
    `retriever.contexts.cache_bytes` bytes (256 MiB by default; settable), least recently used
    first out; `retriever.contexts.cache_stats()` counts hits, misses and evictions.
    """

    # Attributes rebuilt, not copied, when the retriever is pickled or deep-copied.
    _NOT_COPIED = ("_lock", "contexts", "_stored_ids_for", "_stored_ids_usable", "_stored_ids_version", "_pinned_version")

    def __init__(self, config, question_encoder_tokenizer, generator_tokenizer, index: Optional[Index] = None, init_retrieval: bool = True):
        # === Config ===
        self.config = config
        self.n_docs = config.n_docs
        self.batch_size = config.retrieval_batch_size
        self._init_retrieval = init_retrieval
        # === Tokenizers ===
        self.question_encoder_tokenizer = question_encoder_tokenizer
        self.generator_tokenizer = generator_tokenizer
        self.ctx_encoder_tokenizer = None
        self.return_tokenized_docs = False
        # === Index and contexts: published together, under the lock calls take them with ===
        contexts = ContextAssembler.from_config(config, question_encoder_tokenizer, generator_tokenizer)
        index = index if index is not None else index_from_config(config)
        self._publish(index, contexts)
        if init_retrieval:
            self.init_retrieval()

    def _publish(self, index: Index, contexts: ContextAssembler) -> None:
        """Install an index and a context assembler as one change (a re-initialised retriever keeps its lock)."""
        lock = self.__dict__.get("_lock") or threading.RLock()
        with lock:
            self._lock = lock
            self.contexts = contexts
            self._index = index
            self._stored_ids_for, self._stored_ids_usable = None, False
            self._stored_ids_version = (id(contexts), contexts.tokenizer_version)

    # === Copies ===
    def __getstate__(self) -> dict:
        """Configuration, tokenizers and the index's settings and file locations (see the module docstring)."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._NOT_COPIED}
        state["_cache_limits"] = (self.contexts.cache_bytes, self.contexts.cache_size)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        cache_bytes, cache_size = state.pop("_cache_limits", (None, None))
        self.__dict__.update(state)
        limits = {"cache_size": cache_size} if cache_bytes is None else {"cache_bytes": cache_bytes, "cache_size": cache_size}
        contexts = ContextAssembler.from_config(self.config, self.question_encoder_tokenizer, self.generator_tokenizer, **limits)
        self._publish(self._index, contexts)

    def __deepcopy__(self, memo: dict) -> "RagRetriever":
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))  # the index shares its loaded data
        return copied

    # === Index ===
    @property
    def index(self) -> Index:
        return self._index

    @index.setter
    def index(self, index: Index) -> None:
        """Replace the index; calls already running finish on the old one, and what they fetched is
        never cached for the new one (the cache starts a new generation)."""
        with self._lock:
            self._index = index
            self.contexts.clear_cache()  # cached passages belong to the old index's ids
            self._stored_ids_for, self._stored_ids_usable = None, False

    def init_retrieval(self) -> None:
        """Load the index into memory (once; later calls do nothing)."""
        self._index.init_index()

    # === Loading and saving ===
    @classmethod
    def from_pretrained(cls, retriever_name_or_path, indexed_dataset=None, **kwargs) -> "RagRetriever":
        """Load config and tokenizers from a folder (the original's layout) and the index the config names.

        `indexed_dataset`: a `datasets.Dataset` with columns title, text, embeddings and a faiss
        index on `embeddings` (sets `index_name="custom"`). `index`: an `Index` to use instead of
        the one the config names (a served `rag_core.RayIndex`, ...). Extra keyword arguments: `config`,
        `init_retrieval`, `dataset_path` (local passages for exact/compressed), `allow_pickle` (legacy
        DPR pickles), and config overrides (e.g. `index_name=`, `passages_path=`, `index_path=`).
        """
        from .configuration_rag import RagConfig
        from .tokenization_rag import RagTokenizer

        from .hub import pop_hub_kwargs, resolve_folder

        # resolved once: config and tokenizers come from the same snapshot (revision, cache_dir)
        retriever_name_or_path = resolve_folder(retriever_name_or_path, **pop_hub_kwargs(kwargs))
        init_retrieval = kwargs.pop("init_retrieval", True)
        index = kwargs.pop("index", None)
        dataset_path = kwargs.pop("dataset_path", None)
        allow_pickle = kwargs.pop("allow_pickle", False)
        config = kwargs.pop("config", None)
        if config is None:
            config = RagConfig.from_pretrained(retriever_name_or_path, **kwargs)
        else:
            config = copy.deepcopy(config)
            for key, value in kwargs.items():
                setattr(config, key, value)
            config.validate()
        tokenizer = RagTokenizer.from_pretrained(retriever_name_or_path, config=config)
        if index is not None:
            if indexed_dataset is not None:
                raise RetrievalInputError("give either indexed_dataset or index, not both")
        elif indexed_dataset is not None:
            config.index_name = "custom"
            index = CustomIndex.from_dataset(
                indexed_dataset, config.retrieval_vector_size, hnsw_ef_search=config.hnsw_ef_search, ivf_nprobe=config.ivf_nprobe
            )
        else:
            index = index_from_config(config, dataset_path=dataset_path, allow_pickle=allow_pickle)
        return cls(config, tokenizer.question_encoder, tokenizer.generator, index=index, init_retrieval=init_retrieval)

    def save_pretrained(self, save_directory) -> None:
        """Write `config.json` and the tokenizers (`question_encoder_tokenizer/`, `generator_tokenizer/`).

        An index that came from an in-memory dataset (no files yet) is written too, as
        `hf_dataset/` and `hf_dataset_index.faiss`, and the saved config points at them. Other
        indexes are referenced by their paths, not copied.
        """
        from .storage import atomic_save
        from .tokenization_rag import RagTokenizer

        save_directory = os.fspath(save_directory)
        config = copy.deepcopy(self.config)
        index = self._index
        # everything is written beside the folder first, then moved in: other files there are kept, and
        # a failure leaves the previous save as it was
        with atomic_save(save_directory) as staging:
            if isinstance(index, CustomIndex) and index.dataset_path is None:
                import faiss

                dataset = index._dataset
                indexes = dict(getattr(dataset, "_indexes", {}))
                dataset._indexes = {}  # datasets refuses to save a dataset with an attached index
                try:
                    dataset.save_to_disk(os.path.join(staging, "hf_dataset"))
                finally:
                    dataset._indexes = indexes
                faiss.write_index(index.faiss_index, os.path.join(staging, "hf_dataset_index.faiss"))
                # the final locations, not the temporary ones
                config.passages_path = os.path.join(save_directory, "hf_dataset")
                config.index_path = os.path.join(save_directory, "hf_dataset_index.faiss")
            config.save_pretrained(staging)
            # RagTokenizer's layout; each folder replaces the old one whole (never half old, half new)
            for sub, tokenizer in (
                (RagTokenizer.QUESTION_ENCODER_SUBFOLDER, self.question_encoder_tokenizer),
                (RagTokenizer.GENERATOR_SUBFOLDER, self.generator_tokenizer),
            ):
                tokenizer.save_pretrained(os.path.join(staging, sub))

    # === Retrieval ===
    def _snapshot(self) -> tuple[Index, ContextAssembler, int]:
        """The index, the context assembler and the cache generation one call uses from start to end,
        taken together: a concurrent `retriever.index = other` changes none of them mid-call.

        A versioned index (one with `pinned()`, such as `rag_core.serving.RayIndex`) is pinned to its
        current version here; when that version is newer than the last one seen, the passage cache
        starts a new generation (its ids name other passages now).
        """
        with self._lock:
            contexts = self.contexts
            index = self._pin(self._index, contexts)
            return index, contexts, contexts.current_generation()

    def _pin(self, index: Index, contexts: ContextAssembler):
        """`index`, or for a versioned index the view of its current version (call under `self._lock`)."""
        pinned = getattr(index, "pinned", None)
        if pinned is None:
            return index
        view = pinned()
        seen = self.__dict__.get("_pinned_version")
        if seen is not None and seen != (id(index), view.version):
            contexts.clear_cache()
        self._pinned_version = (id(index), view.version)
        return view


    def _check(self, question_hidden_states: Any, n_docs: Any, index: Optional[Index] = None) -> tuple[np.ndarray, int]:
        index = self._index if index is None else index
        vector_size = getattr(index, "vector_size", self.config.retrieval_vector_size)
        return check_question_hidden_states(question_hidden_states, vector_size), check_n_docs(n_docs)

    def _main_retrieve(
        self, question_hidden_states: np.ndarray, n_docs: int, index: Optional[Index] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search `index` (default: the current one) in chunks of `retrieval_batch_size`:
        (doc_ids (B, n) int64, doc_embeds (B, n, D) float32)."""
        index = self._index if index is None else index
        ids, embeds = [], []
        for start in range(0, len(question_hidden_states), self.batch_size):
            chunk_ids, chunk_embeds = index.get_top_docs(question_hidden_states[start : start + self.batch_size], n_docs)
            ids.append(np.asarray(chunk_ids, dtype=np.int64))
            embeds.append(np.asarray(chunk_embeds, dtype=np.float32))
        return np.concatenate(ids), np.concatenate(embeds)

    def retrieve(self, question_hidden_states: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Top `n_docs` passages per question.

        Returns `retrieved_doc_embeds` (B, n_docs, D) float32, `doc_ids` (B, n_docs) int64 (-1: no
        neighbour) and `doc_dicts`, one dict per question with every column of the passages, as
        the original gives them: `title`, `text` and any other column (an `id`, ...) as lists of
        n_docs values, `embeddings` as a (n_docs, D) float32 array.
        """
        return on_one_version(lambda: self._retrieve(question_hidden_states, n_docs), "the index")

    def _retrieve(self, question_hidden_states, n_docs):
        with self._lock:  # one index (version) for the search and the passages, whatever replaces it meanwhile
            index = self._pin(self._index, self.contexts)
        question_hidden_states, n_docs = self._check(question_hidden_states, n_docs, index)
        doc_ids, doc_embeds = self._main_retrieve(question_hidden_states, n_docs, index)
        return doc_embeds, doc_ids, index.get_doc_dicts(doc_ids)

    def set_ctx_encoder_tokenizer(self, ctx_encoder_tokenizer) -> None:
        """End-to-end training: also return the retrieved passages tokenized for the context encoder."""
        self.ctx_encoder_tokenizer = ctx_encoder_tokenizer
        self.return_tokenized_docs = True

    def _stored_ids_reader(self, index: Optional[Index] = None, contexts: Optional[ContextAssembler] = None):
        """`index`'s pre-tokenized passages when they were made by this generator tokenizer, else None.

        The answer is kept per index and rechecked when the tokenizer changes (`add_tokens`, ...);
        calls with truncation or padding do not change it.
        """
        with self._lock:
            index = self._index if index is None else index
            contexts = self.contexts if contexts is None else contexts
            if not hasattr(index, "stored_ids_fingerprint") or not index.is_initialized():
                return None
            version = (id(contexts), contexts.tokenizer_version)
            if self._stored_ids_for is not index or self._stored_ids_version != version:
                fingerprint = index.stored_ids_fingerprint()
                usable = fingerprint is not None and fingerprint == contexts.piece_fingerprint
                # piece_fingerprint notices a changed tokenizer: record the version it was computed for
                version = (id(contexts), contexts.tokenizer_version)
                self._stored_ids_for, self._stored_ids_usable, self._stored_ids_version = index, usable, version
            return index.get_stored_ids if self._stored_ids_usable else None

    def _fetch(self, doc_ids: np.ndarray, index: Optional[Index] = None) -> tuple[list[str], list[str]]:
        """Titles and texts of doc ids (>= 0) from `index` (default: the current one)."""
        index = self._index if index is None else index
        if hasattr(index, "get_passages"):  # a DenseIndex or a pinned served version
            rows = index._doc_ids_to_rows(doc_ids)
            return index.get_passages(rows)
        doc_dicts = index.get_doc_dicts(doc_ids.reshape(1, -1))
        return list(doc_dicts[0]["title"]), list(doc_dicts[0]["text"])

    def __call__(
        self,
        question_input_ids: Any,
        question_hidden_states: np.ndarray,
        prefix: Optional[str] = None,
        n_docs: Optional[int] = None,
        return_tensors: Optional[str] = None,
    ):
        """Retrieve and build the generator inputs.

        Args:
            question_input_ids: (B, Lq) question ids, decoded for the context strings: lists, a numpy
                array, or a torch / TensorFlow tensor (read through its `.numpy()`).
            question_hidden_states: (B, D) float32 question vectors (numpy).
            prefix: prepended to every context (default `config.generator.prefix`).
            n_docs: passages per question (default `config.n_docs`).
            return_tensors: None, "np", "pt" or "tf". As the original: with None, the token ids and
                masks are lists of lists of ints and `retrieved_doc_embeds` / `doc_ids` numpy arrays.

        Returns a `BatchEncoding` with `context_input_ids`, `context_attention_mask` ((B * n_docs, L)
        int64, L = the longest context), `retrieved_doc_embeds` ((B, n_docs, D) float32), `doc_ids`
        ((B, n_docs) int64, -1 where no passage was found), and with a context-encoder tokenizer set,
        `tokenized_doc_ids` / `tokenized_doc_attention_mask` (title and text as a pair, padded to the longest).
        """
        check_retriever_options(prefix=prefix, return_tensors=return_tensors)
        n_docs = resolve(n_docs, self.n_docs)
        return on_one_version(
            lambda: self._call(question_input_ids, question_hidden_states, prefix, n_docs, return_tensors), "the index"
        )

    def _call(self, question_input_ids, question_hidden_states, prefix, n_docs, return_tensors):
        # search, passages and cache all from the index this call starts with (see `_snapshot`)
        index, contexts, generation = self._snapshot()
        question_hidden_states, n_docs = self._check(question_hidden_states, n_docs, index)
        prefix = prefix if prefix is not None else getattr(self.config.generator, "prefix", None)
        questions = contexts.decode_questions(question_input_ids)
        if len(questions) != len(question_hidden_states):
            raise RetrievalInputError(
                f"question_input_ids has {len(questions)} rows but question_hidden_states has {len(question_hidden_states)}"
            )
        doc_ids, doc_embeds = self._main_retrieve(question_hidden_states, n_docs, index)
        fetch = lambda ids: self._fetch(ids, index)  # noqa: E731
        stored = self._stored_ids_reader(index, contexts)  # after the search: a lazily loaded index is loaded now
        pieces = contexts.cached_passages(doc_ids, prefix, fetch, stored, generation=generation)
        context_input_ids, context_attention_mask = contexts.assemble(questions, pieces, n_docs)
        data = {
            "context_input_ids": context_input_ids,
            "context_attention_mask": context_attention_mask,
            "retrieved_doc_embeds": doc_embeds,
            "doc_ids": doc_ids,
        }
        if self.return_tokenized_docs:
            data.update(self._tokenize_docs(doc_ids, index, contexts))
        if return_tensors is None:
            for key in ("context_input_ids", "context_attention_mask", "tokenized_doc_ids", "tokenized_doc_attention_mask"):
                if key in data:
                    data[key] = data[key].tolist()
        return compat.batch_encoding(data, return_tensors)

    def _tokenize_docs(
        self, doc_ids: np.ndarray, index: Optional[Index] = None, contexts: Optional[ContextAssembler] = None
    ) -> dict:
        """The retrieved passages (of `index`, default the current one) for the context encoder:
        (title, text) pairs, as the original fed DPR."""
        contexts = self.contexts if contexts is None else contexts
        flat = doc_ids.reshape(-1)
        titles, texts = [""] * len(flat), [""] * len(flat)
        valid = np.flatnonzero(flat >= 0)
        if len(valid):
            got_titles, got_texts = self._fetch(flat[valid], index)
            for i, title, text in zip(valid, got_titles, got_texts):
                titles[i], texts[i] = title, text
        with contexts.lock:
            tokenized = self.ctx_encoder_tokenizer(titles, texts, truncation=True, padding="longest", return_tensors="np")
        return {
            "tokenized_doc_ids": tokenized["input_ids"].astype(np.int64),
            "tokenized_doc_attention_mask": tokenized["attention_mask"].astype(np.int64),
        }

    # === Bring your own passages ===
    def contexts_from_passages(self, question_input_ids, passages, doc_scores=None, prefix=None, return_tensors=None):
        """Generator inputs from your own passages (see `rag_core.contexts.contexts_from_passages`).

        Works without a loaded index (`init_retrieval=False`).
        """
        return contexts_from_passages(
            self.config,
            self.question_encoder_tokenizer,
            self.generator_tokenizer,
            question_input_ids,
            passages,
            doc_scores=doc_scores,
            prefix=prefix,
            return_tensors=return_tensors,
            assembler=self.contexts,
        )


__all__ = ["RagRetriever", "ContextInputError"]

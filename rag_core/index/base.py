"""The index interface, its errors and input checks, and `DenseIndex`: faiss search over a passage store.

Every index kind (`custom`, `exact` / `compressed`, `legacy`) is a `DenseIndex` that differs only in
where its files are and how they are read (`_load`). Search, lookups, the handling of missing
neighbours and the search settings are written once here.

Missing neighbours: faiss answers id -1 when it finds fewer than `n_docs` neighbours (small index,
IVF cells too few, HNSW graph exhausted). Unlike the original (which turned them into
zero-vector documents that still got a score), the -1 is kept in `doc_ids`; the slot's
embedding is zeros and its passage is empty (title "", text ""). Models read `doc_ids < 0` as
"no document" and give the slot zero probability.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np

from ..arguments import RagInputError
from ..errors import IndexFormatError, IndexNotFoundError, IndexNotInitializedError, IndexServiceError, RetrievalInputError  # noqa: F401 (re-exported)

DEFAULT_HNSW_EF_SEARCH = 128  # faiss' own default (16) costs accuracy; DPR and wiki_dpr use 128
DEFAULT_IVF_NPROBE = 64  # wiki_dpr's compressed index uses 64


# === Input checks ===
def check_n_docs(n_docs: Any) -> int:
    if isinstance(n_docs, (bool, np.bool_)) or not isinstance(n_docs, (int, np.integer)) or n_docs < 1:
        raise RetrievalInputError(f"n_docs must be a positive integer, got {n_docs!r}")
    return int(n_docs)


def check_question_hidden_states(question_hidden_states: Any, vector_size: int) -> np.ndarray:
    """Return the questions as a C-contiguous float32 (batch, vector_size) array, or raise naming the problem."""
    if hasattr(question_hidden_states, "detach") or type(question_hidden_states).__module__.startswith("tensorflow"):
        raise RetrievalInputError(
            "question_hidden_states must be a numpy array; convert the framework tensor first "
            "(torch: t.detach().cpu().numpy(), tensorflow: t.numpy())"
        )
    try:
        array = np.asarray(question_hidden_states)
    except (ValueError, TypeError) as err:  # a ragged nested list
        raise RetrievalInputError(
            f"question_hidden_states must be a (batch_size, {vector_size}) array; the nested lists given are not "
            f"rectangular ({err})"
        ) from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise RetrievalInputError(f"question_hidden_states must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise RetrievalInputError(
            f"question_hidden_states must have shape (batch_size, {vector_size}), got rank {array.ndim} "
            f"shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise RetrievalInputError("question_hidden_states holds no questions (batch_size 0)")
    if array.shape[1] != vector_size:
        raise RetrievalInputError(
            f"question_hidden_states have dimension {array.shape[1]} but the index holds {vector_size}-dim "
            "vectors (RagConfig.retrieval_vector_size / the question encoder's output size)"
        )
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
        array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite).tolist()
        raise RetrievalInputError(f"question_hidden_states rows {rows[:10]} hold NaN or infinite values")
    return array


class IndexVersionChanged(Exception):
    """Raised by a pinned view of a versioned index (see `Index.pinned`) when the index moved to a
    new version during a call: `RagRetriever` then runs the whole call again on the new version, so
    one answer never mixes two versions. Not an error a user sees."""


def on_one_version(call, what: str, attempts: int = 5):
    """`call()`, run again while a versioned index reports `IndexVersionChanged` (at most `attempts` times)."""
    for _ in range(attempts):
        try:
            return call()
        except IndexVersionChanged:
            continue
    raise IndexServiceError(f"{what} changed versions {attempts} times during one call")


# === Interface ===
class Index:
    """What `RagRetriever` needs from an index. Subclass it to plug in another store.

    - `get_top_docs(question_hidden_states (B, D), n_docs) -> (doc_ids (B, n_docs) int64, doc_embeds
      (B, n_docs, D) float32)`; a slot without a neighbour holds id -1 and a zero vector.
    - `get_doc_dicts(doc_ids (B, n_docs)) -> B dicts` with `title`, `text` (lists of n_docs strings)
      and `embeddings` ((n_docs, D) float32); an id < 0 gives "", "" and zeros.
    - `init_index()` loads the index into memory; `is_initialized()` says whether it is loaded.

    An index whose content can change under its users (a served index swapping versions) also
    offers `pinned()`: a view of the current version that `RagRetriever` uses for every step of
    one call, raising `IndexVersionChanged` if that version is retired meanwhile.
    """

    vector_size: int

    def get_doc_dicts(self, doc_ids: np.ndarray) -> list[dict]:
        raise NotImplementedError

    def get_top_docs(self, question_hidden_states: np.ndarray, n_docs: int = 5) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def is_initialized(self) -> bool:
        raise NotImplementedError

    def init_index(self) -> None:
        raise NotImplementedError


# === Search settings ===
def _sub_indexes(index):
    """The index and every index nested in it (refine base, pre-transform, id map, IVF quantizer)."""
    import faiss

    index = faiss.downcast_index(index)
    yield index
    for attr in ("base_index", "index", "quantizer"):
        sub = getattr(index, attr, None)
        if isinstance(sub, faiss.Index):
            yield from _sub_indexes(sub)


def apply_search_parameters(index, hnsw_ef_search: Optional[int] = None, ivf_nprobe: Optional[int] = None) -> dict:
    """Set HNSW `efSearch` and IVF `nprobe` on `index` and its nested indexes; return what was set.

    `None` keeps the index's stored value when it is at least our default (a builder chose it)
    and raises it to the default otherwise (faiss' built-in efSearch 16 / nprobe 1 silently lose
    neighbours). `nprobe` never exceeds the number of IVF lists.
    """
    import faiss

    applied: dict = {}
    for sub in _sub_indexes(index):
        if isinstance(sub, faiss.IndexHNSW):
            value = hnsw_ef_search if hnsw_ef_search is not None else max(sub.hnsw.efSearch, DEFAULT_HNSW_EF_SEARCH)
            sub.hnsw.efSearch = int(value)
            applied.setdefault("efSearch", int(value))
        if isinstance(sub, faiss.IndexIVF):
            value = ivf_nprobe if ivf_nprobe is not None else max(sub.nprobe, DEFAULT_IVF_NPROBE)
            value = min(int(value), sub.nlist)
            sub.nprobe = value
            applied.setdefault("nprobe", value)
    return applied


def read_faiss_index(path: str, what: str):
    import faiss

    try:
        return faiss.read_index(path)
    except RuntimeError as err:
        raise IndexFormatError(f"{what} {path!r} is not a readable faiss index (corrupt or truncated?): {err}") from None


# === The shared implementation ===
class DenseIndex(Index):
    """A faiss index whose row `i` is passage `i` of a `PassageStore`.

    Subclasses implement `_load() -> (faiss_index, passage_store)` and may map faiss rows to
    document ids (`_rows_to_doc_ids`, `_doc_ids_to_rows`), to passage rows (`_passage_rows`) and
    supply embeddings another way (`_embeddings`). Loading happens once, under a lock; searches
    run concurrently (faiss searches do not mutate the index).

    Copies travel without the loaded data: a pickled index carries its settings and file
    locations only (`_LOADED` names what is left behind) and, when the original was loaded, loads
    itself from the files on first use. `copy.deepcopy` shares the loaded faiss index and passages
    (they are read-only) instead of duplicating them.
    """

    # Attributes that hold loaded data: never pickled, rebuilt by `init_index()`.
    _LOADED: tuple[str, ...] = ("_faiss_index", "_passages", "search_parameters")

    def __init__(
        self,
        vector_size: int,
        hnsw_ef_search: Optional[int] = None,
        ivf_nprobe: Optional[int] = None,
        rerank_k_factor: Optional[int] = None,
    ):
        self.vector_size = int(vector_size)
        self.hnsw_ef_search = hnsw_ef_search
        self.ivf_nprobe = ivf_nprobe
        # > 1: fetch rerank_k_factor * n_docs candidates and re-rank them by the exact inner product
        # with the stored (memory-mapped) embeddings: a compressed index keeps exact top-k order.
        self.rerank_k_factor = rerank_k_factor
        self.search_parameters: dict = {}
        self._faiss_index = None
        self._passages = None
        self._load_lock = threading.Lock()
        self._load_on_use = False  # set on copies of a loaded index: load from the files on first use

    # --- copies ---
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in self._LOADED and k != "_load_lock"}
        state["_load_on_use"] = self._load_on_use or self._faiss_index is not None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for name in self._LOADED:
            setattr(self, name, {} if name == "search_parameters" else None)
        self._load_lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> "DenseIndex":
        # the same loaded faiss index and passages (read-only); settings and lock of its own
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        copied._load_lock = threading.Lock()
        copied.search_parameters = dict(self.search_parameters)
        memo[id(self)] = copied
        return copied

    # --- hooks ---
    def _load(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _query_dim(self) -> int:
        return self.vector_size

    def _queries(self, question_hidden_states: np.ndarray) -> np.ndarray:
        return question_hidden_states

    def _rows_to_doc_ids(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def _doc_ids_to_rows(self, doc_ids: np.ndarray) -> np.ndarray:
        if doc_ids.size and doc_ids.max() >= len(self._passages):
            bad = doc_ids[doc_ids >= len(self._passages)][:5].tolist()
            raise RetrievalInputError(f"doc ids {bad} are out of range: the index holds {len(self._passages)} passages")
        return doc_ids

    def _embeddings(self, rows: np.ndarray) -> np.ndarray:
        return self._passages.embeddings(rows)

    def _passage_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the passage store of faiss rows (1-D, -1 kept)."""
        return rows

    # --- interface ---
    def is_initialized(self) -> bool:
        return self._faiss_index is not None

    def init_index(self) -> None:
        with self._load_lock:
            if self._faiss_index is not None:
                return
            faiss_index, passages = self._load()
            if faiss_index.d != self._query_dim():
                raise IndexFormatError(
                    f"the faiss index holds {faiss_index.d}-dim vectors but {self._query_dim()} were expected "
                    f"(RagConfig.retrieval_vector_size={self.vector_size})"
                )
            if passages.embedding_dim is not None and passages.embedding_dim != self.vector_size:
                raise IndexFormatError(
                    f"the passages' embeddings are {passages.embedding_dim}-dim but "
                    f"RagConfig.retrieval_vector_size={self.vector_size}"
                )
            if faiss_index.ntotal != self._expected_ntotal(passages):
                raise IndexFormatError(
                    f"the faiss index holds {faiss_index.ntotal} vectors but there are {len(passages)} passages; "
                    "the index and the passages do not belong together"
                )
            self.search_parameters = apply_search_parameters(faiss_index, self.hnsw_ef_search, self.ivf_nprobe)
            self._passages = passages
            self._faiss_index = faiss_index  # set last: is_initialized() is True only when complete

    def _expected_ntotal(self, passages) -> int:
        return len(passages)

    def _require_initialized(self) -> None:
        if self._faiss_index is None:
            if self._load_on_use:
                self.init_index()
                return
            raise IndexNotInitializedError(
                f"{type(self).__name__} is not loaded: call init_index() (or retriever.init_retrieval()) first"
            )

    @property
    def faiss_index(self):
        self._require_initialized()
        return self._faiss_index

    def __len__(self) -> int:
        self._require_initialized()
        return len(self._passages)

    def search(self, question_hidden_states: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: (scores (B, n_docs) float32, faiss rows (B, n_docs) int64, -1 for no neighbour)."""
        self._require_initialized()
        queries = check_question_hidden_states(question_hidden_states, self.vector_size)
        n_docs = check_n_docs(n_docs)
        factor = self.rerank_k_factor or 1
        scores, rows = self._faiss_index.search(self._queries(queries), n_docs * factor)
        rows = rows.astype(np.int64, copy=False)
        rows[rows < 0] = -1
        if factor > 1:
            scores, rows = self._rerank(queries, rows, n_docs)
        return scores, rows

    def _rerank(self, queries: np.ndarray, rows: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of the shortlist, best first; missing candidates (-1) sort last."""
        vectors = self._embeddings(rows)  # (B, k', D)
        exact = np.einsum("bd,bkd->bk", queries, vectors)
        exact[rows < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :n_docs]
        return np.take_along_axis(exact, order, 1).astype(np.float32), np.take_along_axis(rows, order, 1)

    def get_top_docs(self, question_hidden_states: np.ndarray, n_docs: int = 5) -> tuple[np.ndarray, np.ndarray]:
        _, rows = self.search(question_hidden_states, n_docs)
        return self._rows_to_doc_ids(rows), self._embeddings(rows)

    def get_doc_dicts(self, doc_ids: np.ndarray) -> list[dict]:
        """One dict per row of `doc_ids`: every column of the passages, as the original's datasets give
        them (lists of n_docs values, `embeddings` a float32 `(n_docs, D)` array). An id < 0 gives
        title "", text "", a zero vector and None in the other columns."""
        self._require_initialized()
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        if doc_ids.ndim != 2:
            raise RetrievalInputError(f"doc_ids must have shape (batch_size, n_docs), got shape {doc_ids.shape}")
        rows = np.full(doc_ids.shape, -1, dtype=np.int64)
        valid = doc_ids >= 0
        rows[valid] = self._doc_ids_to_rows(doc_ids[valid])
        titles, texts = self.get_passages(rows.reshape(-1))
        embeds = self._embeddings(rows)
        others = self._passages.columns(self._passage_rows(rows.reshape(-1)), skip=("title", "text", "embeddings"))
        columns = {"title": titles, "text": texts, **others}
        order = [name for name in self._passages.column_names if name in columns or name == "embeddings"]
        order += [name for name in ("title", "text", "embeddings") if name not in order]
        n = doc_ids.shape[1]
        return [
            {
                name: embeds[i] if name == "embeddings" else columns[name][i * n : (i + 1) * n]
                for name in order
            }
            for i in range(doc_ids.shape[0])
        ]

    def get_passages(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """Titles and texts of faiss rows (1-D); row -1 gives an empty passage."""
        self._require_initialized()
        return self._passages.passages(np.asarray(rows, dtype=np.int64))

    def stored_ids_fingerprint(self) -> Optional[str]:
        """Fingerprint of the pre-tokenized passage pieces stored with the passages, None if there are none."""
        return None

    def get_stored_ids(self, doc_ids: np.ndarray) -> list:
        """Stored passage pieces of doc ids (>= 0), None per passage without one."""
        self._require_initialized()
        return self._passages.stored_ids(self._doc_ids_to_rows(np.asarray(doc_ids, dtype=np.int64)))

    def set_search_parameters(self, hnsw_ef_search: Optional[int] = None, ivf_nprobe: Optional[int] = None) -> dict:
        """Change efSearch / nprobe of a loaded index. Do not call while other threads search."""
        self.hnsw_ef_search, self.ivf_nprobe = hnsw_ef_search, ivf_nprobe
        if self._faiss_index is not None:
            self.search_parameters = apply_search_parameters(self._faiss_index, hnsw_ef_search, ivf_nprobe)
        return self.search_parameters

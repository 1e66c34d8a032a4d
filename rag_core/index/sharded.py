"""`ShardedIndex`: one index over several `build_index` shard folders, searched shard by shard.

`python -m rag_core.build_index PASSAGES OUT --shards S` (or `--split-index EXISTING OUT --shards S`)
writes S self-contained `custom` folders and a manifest:

    OUT/shards.json        format, index kind, dimension, passages, and per shard its folder and
                           global id range [start, end) (written last)
    OUT/shard-00000/ ...   each a normal `build_index` folder (`CustomIndex` loads it on its own)

Shard k's local row i is global document id `start_k + i`; the shards together hold the passages
in their original order. A search asks every shard for its top `n_docs` (each shard applies its
own exact re-ranking, as `CustomIndex` does) and merges them exactly: by score (inner product),
ties by the smaller global id. A shard's empty slots (-1) are dropped before the merge, so the
result holds -1 only when all shards together have fewer than `n_docs` passages. Over flat shards
the merged top-k equals that of one flat index over all passages.

`RagRetriever` selects it with `index_name="custom"` and `passages_path` (or `index_path`)
pointing at OUT, or takes it directly: `RagRetriever(config, ..., index=ShardedIndex(384, "OUT"))`.

Example:
    >>> index = ShardedIndex(vector_size=384, folder="kb_shards")
    >>> index.init_index()
    >>> doc_ids, doc_embeds = index.get_top_docs(question_vectors, n_docs=5)
"""

from __future__ import annotations

import copy
import json
import os
from typing import Optional

import numpy as np

from .base import DenseIndex, IndexFormatError, IndexNotFoundError, check_n_docs, check_question_hidden_states
from .custom import INCOMPLETE_MARKER, MANIFEST, CustomIndex, read_manifest

SHARDS_MANIFEST = "shards.json"
SHARD_FORMAT = "rag_core.sharded_index"
SHARD_LAYOUT_VERSION = 1


def shard_folder_name(k: int) -> str:
    return f"shard-{k:05d}"


def is_sharded_folder(path) -> bool:
    """Whether `path` is a folder holding a shard manifest (`shards.json`)."""
    return path is not None and os.path.isfile(os.path.join(os.fspath(path), SHARDS_MANIFEST))


def read_shards_manifest(folder: str) -> dict:
    """The checked shard manifest of `folder`, or an error naming what is wrong."""
    folder = os.fspath(folder)
    if os.path.exists(os.path.join(folder, INCOMPLETE_MARKER)):
        raise IndexFormatError(
            f"{folder!r} holds a sharded index whose build did not finish ({INCOMPLETE_MARKER} marker present); "
            "rebuild it with `python -m rag_core.build_index ... --shards S`"
        )
    path = os.path.join(folder, SHARDS_MANIFEST)
    if not os.path.isfile(path):
        raise IndexNotFoundError(f"{folder!r} has no {SHARDS_MANIFEST}: it is not a sharded index folder")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{path!r} is unreadable: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        raise IndexFormatError(f"{path!r} is not a rag_core shard manifest")
    if manifest.get("layout_version") != SHARD_LAYOUT_VERSION:
        raise IndexFormatError(
            f"{path!r} has layout_version {manifest.get('layout_version')!r}; this version reads {SHARD_LAYOUT_VERSION}"
        )
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise IndexFormatError(f"{path!r} lists no shards")
    expected = 0
    for k, entry in enumerate(shards):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), int) for key in ("start", "end", "num_passages")) \
                or not isinstance(entry.get("folder"), str):
            raise IndexFormatError(f"{path!r}: shard {k} needs a folder name and integer start, end and num_passages")
        if entry["start"] != expected or entry["end"] - entry["start"] != entry["num_passages"] or entry["num_passages"] < 1:
            raise IndexFormatError(
                f"{path!r}: shard {k} ({entry['folder']!r}) covers ids [{entry['start']}, {entry['end']}) with "
                f"{entry['num_passages']} passages; shards must cover consecutive, non-empty id ranges from 0"
            )
        if os.path.basename(entry["folder"]) != entry["folder"] or entry["folder"] in ("", ".", ".."):
            raise IndexFormatError(f"{path!r}: shard {k} folder {entry['folder']!r} must be a plain name inside {folder!r}")
        expected = entry["end"]
    if manifest.get("num_passages") != expected:
        raise IndexFormatError(f"{path!r} says {manifest.get('num_passages')} passages but its shards cover {expected}")
    return manifest


class ShardedPassages:
    """The passages of several shards as one store addressed by global row (the `PassageStore` lookups)."""

    def __init__(self, stores: list, starts: np.ndarray, source: str):
        self.stores = stores
        self.starts = np.asarray(starts, dtype=np.int64)
        self.source = source
        self._n = int(self.starts[-1] + len(stores[-1]))
        self.embedding_dim = stores[0].embedding_dim

    def __len__(self) -> int:
        return self._n

    @property
    def column_names(self) -> list[str]:
        return self.stores[0].column_names

    @property
    def has_stored_ids(self) -> bool:
        return all(store.has_stored_ids for store in self.stores)

    def _split(self, rows: np.ndarray):
        """(positions, local rows) of the valid (>= 0) entries of 1-D `rows`, per shard that holds any."""
        valid = np.flatnonzero(rows >= 0)
        shard_of = np.searchsorted(self.starts, rows[valid], side="right") - 1
        for k in np.unique(shard_of):
            positions = valid[shard_of == k]
            yield int(k), positions, rows[positions] - self.starts[k]

    def passages(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        titles, texts = [""] * len(rows), [""] * len(rows)
        for k, positions, local in self._split(rows):
            got_titles, got_texts = self.stores[k].passages(local)
            for i, title, text in zip(positions, got_titles, got_texts):
                titles[i], texts[i] = title, text
        return titles, texts

    def columns(self, rows: np.ndarray, skip: tuple = ()) -> dict[str, list]:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        names = [name for name in self.column_names if name not in skip]
        out = {name: [None] * len(rows) for name in names}
        for k, positions, local in self._split(rows):
            got = self.stores[k].columns(local, skip=skip)
            for name in names:
                for i, value in zip(positions, got[name]):
                    out[name][i] = value
        return out

    def stored_ids(self, rows: np.ndarray) -> list:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out: list = [None] * len(rows)
        for k, positions, local in self._split(rows):
            for i, ids in zip(positions, self.stores[k].stored_ids(local)):
                out[i] = ids
        return out

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, self.embedding_dim), dtype=np.float32)
        for k, positions, local in self._split(flat):
            out[positions] = self.stores[k].embeddings(local)
        return out.reshape(*rows.shape, self.embedding_dim)


def merged_order(scores: np.ndarray, ids: np.ndarray, n_docs: int) -> np.ndarray:
    """Positions (B, min(n_docs, C)) of the best candidates among `scores` / global `ids` (B, C).

    Found (id >= 0) before missing, then higher score, then smaller id: the order every merge of
    per-shard results uses, in one process (`ShardedIndex`) or across processes (`rag_core.serving`).
    """
    missing = ids < 0
    # lexsort: the last key is the primary one
    return np.lexsort((ids, -np.where(missing, 0, scores), missing), axis=-1)[:, :n_docs]


def merge_top_k(results: list[tuple[np.ndarray, np.ndarray]], starts, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard `(scores (B, k), local rows (B, k))` into the global top `n_docs`.

    Local row i of shard s becomes global id `starts[s] + i`; empty slots (-1) are dropped; the rest
    are ordered by score (higher first), ties by the smaller global id. Slots left over when all
    shards together found fewer than `n_docs` hold id -1 and score -inf.
    """
    scores, ids = [], []
    for (shard_scores, rows), start in zip(results, starts):
        rows = np.asarray(rows, dtype=np.int64)
        ids.append(np.where(rows >= 0, rows + int(start), -1))
        scores.append(np.asarray(shard_scores, dtype=np.float32))
    scores, ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
    order = merged_order(scores, ids, n_docs)
    merged_ids = np.take_along_axis(ids, order, 1)
    merged_scores = np.take_along_axis(scores, order, 1)
    if merged_ids.shape[1] < n_docs:  # every shard returns n_docs slots, so only with no shards at all
        pad = n_docs - merged_ids.shape[1]
        merged_ids = np.pad(merged_ids, ((0, 0), (0, pad)), constant_values=-1)
        merged_scores = np.pad(merged_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    merged_scores = np.where(merged_ids < 0, -np.inf, merged_scores).astype(np.float32)
    return merged_scores, merged_ids


class ShardedIndex(DenseIndex):
    """Several `build_index` shard folders searched as one index. See the module docstring.

    Each shard is a `CustomIndex` (`self.shards`); the search settings apply to all of them.
    Document ids are global (`start` of the shard + local row). `faiss_index` is the tuple of the
    shards' faiss indexes.
    """

    def __init__(
        self,
        vector_size: int,
        folder: str,
        hnsw_ef_search: Optional[int] = None,
        ivf_nprobe: Optional[int] = None,
        rerank_k_factor: Optional[int] = None,
    ):
        super().__init__(vector_size, hnsw_ef_search=hnsw_ef_search, ivf_nprobe=ivf_nprobe, rerank_k_factor=rerank_k_factor)
        if folder is None:
            raise IndexNotFoundError("ShardedIndex needs the folder written by `python -m rag_core.build_index ... --shards S`")
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise IndexNotFoundError(f"sharded index folder {folder!r} does not exist (or is not a folder)")
        self.folder = folder
        self.manifest = read_shards_manifest(folder)
        dim = self.manifest.get("dim")
        if dim is not None and dim != self.vector_size:
            raise IndexFormatError(
                f"the sharded index {folder!r} holds {dim}-dim vectors but RagConfig.retrieval_vector_size="
                f"{self.vector_size}"
            )
        self.starts = np.asarray([entry["start"] for entry in self.manifest["shards"]], dtype=np.int64)
        self.shards: list[CustomIndex] = []
        for k, entry in enumerate(self.manifest["shards"]):
            path = os.path.join(folder, entry["folder"])
            what = f"shard {k} ({entry['folder']!r}, ids [{entry['start']}, {entry['end']})) of the sharded index {folder!r}"
            if not os.path.isdir(path):
                raise IndexNotFoundError(f"{what} is missing: {path!r} does not exist")
            try:
                shard_manifest = read_manifest(path)
            except IndexFormatError as err:
                raise IndexFormatError(f"{what}: {err}") from None
            if shard_manifest is None:
                raise IndexNotFoundError(f"{what} is incomplete: {path!r} has no {MANIFEST}")
            if shard_manifest.get("num_passages") != entry["num_passages"]:
                raise IndexFormatError(
                    f"{what}: its manifest says {shard_manifest.get('num_passages')} passages, {SHARDS_MANIFEST} "
                    f"{entry['num_passages']}"
                )
            try:
                self.shards.append(CustomIndex(vector_size, path, None, hnsw_ef_search, ivf_nprobe, rerank_k_factor))
            except (IndexNotFoundError, IndexFormatError) as err:
                raise type(err)(f"{what}: {err}") from None

    def __deepcopy__(self, memo: dict) -> "ShardedIndex":
        copied = super().__deepcopy__(memo)  # shares the loaded passages and faiss indexes (read-only)
        copied.shards = [copy.deepcopy(shard, memo) for shard in self.shards]
        return copied

    def init_index(self) -> None:
        with self._load_lock:
            if self._faiss_index is not None:
                return
            for k, shard in enumerate(self.shards):
                try:
                    shard.init_index()
                except (IndexNotFoundError, IndexFormatError) as err:
                    raise type(err)(f"shard {k} ({self.manifest['shards'][k]['folder']!r}) of {self.folder!r}: {err}") from None
            stores = [shard._passages for shard in self.shards]
            for k, (store, entry) in enumerate(zip(stores, self.manifest["shards"])):
                if len(store) != entry["num_passages"]:
                    raise IndexFormatError(
                        f"shard {k} ({entry['folder']!r}) of {self.folder!r} holds {len(store)} passages, "
                        f"{SHARDS_MANIFEST} says {entry['num_passages']}"
                    )
                if store.column_names != stores[0].column_names:
                    raise IndexFormatError(
                        f"shard {k} ({entry['folder']!r}) of {self.folder!r} has columns {store.column_names}, "
                        f"shard 0 has {stores[0].column_names}"
                    )
            self.search_parameters = dict(self.shards[0].search_parameters)
            self._passages = ShardedPassages(stores, self.starts, source=f"sharded index {self.folder!r}")
            self._faiss_index = tuple(shard._faiss_index for shard in self.shards)  # last: marks loaded

    def search(self, question_hidden_states: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """Every shard's top `n_docs`, merged: (scores (B, n_docs) float32, global ids (B, n_docs) int64, -1: none)."""
        self._require_initialized()
        queries = check_question_hidden_states(question_hidden_states, self.vector_size)
        n_docs = check_n_docs(n_docs)
        results = [shard.search(queries, n_docs) for shard in self.shards]
        return merge_top_k(results, self.starts, n_docs)

    def stored_ids_fingerprint(self) -> Optional[str]:
        self._require_initialized()
        fingerprints = {shard.stored_ids_fingerprint() for shard in self.shards}
        return fingerprints.pop() if len(fingerprints) == 1 else None

    def set_search_parameters(self, hnsw_ef_search: Optional[int] = None, ivf_nprobe: Optional[int] = None) -> dict:
        """Change efSearch / nprobe of every shard. Do not call while other threads search."""
        self.hnsw_ef_search, self.ivf_nprobe = hnsw_ef_search, ivf_nprobe
        for shard in self.shards:
            shard.set_search_parameters(hnsw_ef_search, ivf_nprobe)
        if self._faiss_index is not None:
            self.search_parameters = dict(self.shards[0].search_parameters)
        return self.search_parameters

    @property
    def num_shards(self) -> int:
        return len(self.shards)

"""`PassageStore`: titles, texts and embeddings of passages, read from Arrow without copying.

A dataset written by `datasets.Dataset.save_to_disk` is a set of memory-mapped Arrow files. The
store keeps the Arrow columns as they are and looks rows up by position, so a 21M-passage
knowledge base costs no RAM until pages are touched, and a lookup never goes through
`datasets`' per-row Python formatting.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from .base import IndexFormatError, IndexNotFoundError

REQUIRED_COLUMNS = ("title", "text", "embeddings")
STORED_IDS_COLUMN = "generator_input_ids"  # optional: pre-tokenized passage pieces (rag_core.contexts)


def _embedding_chunks(column, source: str) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Per-chunk (rows, dim) float32 views of a list<float> column, the chunk start offsets and the dim."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks, starts, dim, start = [], [], None, 0
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        if not (pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type) or pa.types.is_fixed_size_list(chunk.type)):
            raise IndexFormatError(f"{source}: column 'embeddings' must hold lists of floats, got {chunk.type}")
        if chunk.null_count:
            raise IndexFormatError(f"{source}: column 'embeddings' has {chunk.null_count} missing rows")
        if pa.types.is_fixed_size_list(chunk.type):
            chunk_dim = chunk.type.list_size
        else:
            lengths = pc.list_value_length(chunk)
            low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
            if low != high:
                raise IndexFormatError(f"{source}: rows of column 'embeddings' differ in length ({low} to {high})")
            chunk_dim = low
        if dim is None:
            dim = chunk_dim
        elif chunk_dim != dim:
            raise IndexFormatError(f"{source}: rows of column 'embeddings' differ in length ({dim} and {chunk_dim})")
        values = chunk.flatten()
        if values.null_count:
            raise IndexFormatError(f"{source}: column 'embeddings' holds missing values")
        if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            raise IndexFormatError(f"{source}: column 'embeddings' must hold floats, got {values.type}")
        array = values.to_numpy(zero_copy_only=False)
        if array.dtype != np.float32:  # float64 / float16 columns: one copy, at load
            array = array.astype(np.float32)
        chunks.append(array.reshape(len(chunk), dim))
        starts.append(start)
        start += len(chunk)
    return chunks, np.asarray(starts, dtype=np.int64), dim


class PassageStore:
    """Passages (title, text, optionally embeddings) addressed by row number.

    Built from a `pyarrow.Table` (`from_table`), a `datasets.Dataset` (`from_dataset`) or a
    `save_to_disk` directory (`from_disk`).
    """

    def __init__(self, table, source: str, require_embeddings: bool = True):
        columns = set(table.column_names)
        required = REQUIRED_COLUMNS if require_embeddings else ("title", "text")
        missing = [c for c in required if c not in columns]
        if missing:
            raise IndexFormatError(
                f"{source}: missing column(s) {missing}; passages need columns {list(required)} "
                f"(title: str, text: str, embeddings: list of floats), found {sorted(columns)}"
            )
        if table.num_rows == 0:
            raise IndexFormatError(f"{source}: holds no passages (0 rows)")
        self.source = source
        self.table = table
        self._n = table.num_rows
        self._titles = table.column("title")
        self._texts = table.column("text")
        self.embedding_dim: Optional[int] = None
        self._stored_ids = table.column(STORED_IDS_COLUMN) if STORED_IDS_COLUMN in columns else None
        if "embeddings" in columns:
            self._emb_chunks, self._emb_starts, self.embedding_dim = _embedding_chunks(table.column("embeddings"), source)

    # === Construction ===
    @classmethod
    def from_dataset(cls, dataset, source: str = "dataset", require_embeddings: bool = True) -> "PassageStore":
        if getattr(dataset, "_indices", None) is not None:  # a select()/shuffle() view: materialise row order
            dataset = dataset.flatten_indices(keep_in_memory=True)
        return cls(dataset.data.table, source, require_embeddings=require_embeddings)

    @classmethod
    def from_disk(cls, path: str, what: str = "passages", require_embeddings: bool = True) -> "PassageStore":
        """Read a `datasets.Dataset.save_to_disk` directory (memory-mapped)."""
        path = os.fspath(path)
        check_dataset_dir(path, what)
        import datasets

        try:
            dataset = datasets.load_from_disk(path)
        except Exception as err:  # datasets raises many kinds for damaged folders
            raise IndexFormatError(f"{what} {path!r} cannot be read as a saved dataset: {type(err).__name__}: {err}") from None
        if isinstance(dataset, datasets.DatasetDict):
            raise IndexFormatError(
                f"{what} {path!r} is a DatasetDict with splits {list(dataset)}; point to one split's folder"
            )
        return cls.from_dataset(dataset, source=f"{what} {path!r}", require_embeddings=require_embeddings)

    # === Lookups ===
    def __len__(self) -> int:
        return self._n

    def passages(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """Titles and texts of `rows` (1-D int64); row -1 is the empty passage ("", "")."""
        import pyarrow as pa

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        valid = rows >= 0
        if valid.all():
            take = pa.array(rows)
            return _strings(self._titles.take(take)), _strings(self._texts.take(take))
        titles, texts = [""] * len(rows), [""] * len(rows)
        if valid.any():
            take = pa.array(rows[valid])
            for i, title, text in zip(np.flatnonzero(valid), _strings(self._titles.take(take)), _strings(self._texts.take(take))):
                titles[i], texts[i] = title, text
        return titles, texts

    @property
    def column_names(self) -> list[str]:
        return list(self.table.column_names)

    def columns(self, rows: np.ndarray, skip: tuple = ()) -> dict[str, list]:
        """The values of every column but `skip` for `rows` (1-D), as Python lists; row -1 gives None."""
        import pyarrow as pa

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        names = [name for name in self.table.column_names if name not in skip]
        if not names:
            return {}
        valid = rows >= 0
        taken = self.table.select(names).take(pa.array(rows[valid]))
        out = {}
        for name in names:
            values = taken.column(name).to_pylist()
            if valid.all():
                out[name] = values
            else:
                column = [None] * len(rows)
                for i, value in zip(np.flatnonzero(valid), values):
                    column[i] = value
                out[name] = column
        return out

    @property
    def has_stored_ids(self) -> bool:
        return self._stored_ids is not None

    def stored_ids(self, rows: np.ndarray) -> list:
        """Stored generator ids of `rows` (>= 0): int64 arrays, None where none was stored."""
        import pyarrow as pa

        taken = self._stored_ids.take(pa.array(np.asarray(rows, dtype=np.int64))).combine_chunks()
        valid = taken.is_valid().to_numpy(zero_copy_only=False)
        offsets = taken.offsets.to_numpy()
        values = taken.values.to_numpy(zero_copy_only=False).astype(np.int64)
        return [values[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(len(taken))]

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of `rows` (any shape) as float32 (*rows.shape, dim); row -1 gives zeros."""
        if self.embedding_dim is None:
            raise IndexFormatError(f"{self.source}: has no 'embeddings' column")
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, self.embedding_dim), dtype=np.float32)
        valid = flat >= 0
        if len(self._emb_chunks) == 1:
            out[valid] = self._emb_chunks[0][flat[valid]]
        else:
            positions = np.flatnonzero(valid)
            chunk_of = np.searchsorted(self._emb_starts, flat[positions], side="right") - 1
            for c in np.unique(chunk_of):
                sel = positions[chunk_of == c]
                out[sel] = self._emb_chunks[c][flat[sel] - self._emb_starts[c]]
        return out.reshape(*rows.shape, self.embedding_dim)


def _strings(array) -> list[str]:
    return ["" if s is None else s for s in array.to_pylist()]


def check_dataset_dir(path: str, what: str) -> None:
    """A `save_to_disk` folder exists and holds its two metadata files and its Arrow shards."""
    if not os.path.exists(path):
        raise IndexNotFoundError(
            f"{what} {path!r} does not exist; it must be a folder written by datasets' Dataset.save_to_disk "
            "(columns title, text, embeddings), e.g. by `python -m rag_core.build_index`"
        )
    if not os.path.isdir(path):
        raise IndexFormatError(f"{what} {path!r} is a file; it must be a folder written by Dataset.save_to_disk")
    for name in ("state.json", "dataset_info.json"):
        if not os.path.isfile(os.path.join(path, name)):
            raise IndexNotFoundError(
                f"{what} {path!r} has no {name}: it is not a folder written by Dataset.save_to_disk "
                "(or the write was interrupted)"
            )
    try:
        with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{what} {path!r}: state.json is unreadable: {err}") from None
    if not state.get("_data_files"):
        raise IndexFormatError(f"{what} {path!r} holds no passages (a saved dataset with 0 data files)")
    for entry in state.get("_data_files", []):
        shard = os.path.join(path, entry.get("filename", ""))
        if not os.path.isfile(shard):
            raise IndexNotFoundError(f"{what} {path!r}: data file {entry.get('filename')!r} is missing")

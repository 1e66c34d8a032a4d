"""`LegacyIndex` (`index_name="legacy"`): the index and passages of facebookresearch/DPR, from a local folder.

DPR ships an HNSW-SQ8 faiss index over 769-dim vectors (768 + the "phi" dimension that turns inner
product into L2; queries get a 0 appended), a list mapping index rows to passage ids, and the
passages. DPR stored the list and the passages with `pickle`, which runs arbitrary code on load.
This index reads pickle-free equivalents by default and the pickles only with `allow_pickle=True`,
and even then through an unpickler that refuses every global, so only plain data (lists, dicts,
strings, numbers) can come out of them and no code runs:

| what | pickle-free (default) | pickled (needs `allow_pickle=True`) |
|---|---|---|
| faiss index | `hf_bert_base.hnswSQ8_correct_phi_128.c_index.index.dpr` | (same file, not a pickle) |
| row -> passage id | `...c_index.index_meta.npy` (int64, `np.save`) | `...c_index.index_meta.dpr` |
| passages | `psgs_w100.tsv` (DPR's own TSV: id, text, title) | `psgs_w100.tsv.pkl` |

The original also fetched these from a Google bucket when no local folder was given; this one
never downloads.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from .base import DenseIndex, IndexFormatError, IndexNotFoundError, RetrievalInputError, read_faiss_index
from .passages import PassageStore
from ..errors import PickleNotAllowedError  # noqa: F401 (re-exported)

INDEX_FILENAME = "hf_bert_base.hnswSQ8_correct_phi_128.c_index"
INDEX_FILE = INDEX_FILENAME + ".index.dpr"
META_NPY = INDEX_FILENAME + ".index_meta.npy"
META_PICKLE = INDEX_FILENAME + ".index_meta.dpr"
PASSAGES_TSV = "psgs_w100.tsv"
PASSAGES_PICKLE = "psgs_w100.tsv.pkl"


def _load_pickle(path: str):
    """DPR's pickled id list or passages dict, only with `allow_pickle=True`, and even then only plain
    data: lists, tuples, dicts, strings and numbers need no global, and any global (a class or a
    function, which is how a pickle runs code) is refused with `IndexFormatError`."""
    import pickle  # only reached with allow_pickle=True

    class _PlainDataUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            raise IndexFormatError(
                f"{path}: refusing to load {module}.{name} from a pickle: only plain lists, dicts, "
                "strings and numbers are read from DPR's files"
            )

    with open(path, "rb") as f:
        return _PlainDataUnpickler(f).load()


class LegacyIndex(DenseIndex):
    """DPR's own index and passages from a local folder (see the module docstring for the files)."""

    _LOADED = DenseIndex._LOADED + ("_row_to_db", "_db_sorted", "_db_sorted_values", "_passage_order", "_passage_ids_sorted")

    def __init__(
        self,
        vector_size: int,
        index_path: Optional[str],
        allow_pickle: bool = False,
        hnsw_ef_search: Optional[int] = None,
        ivf_nprobe: Optional[int] = None,
    ):
        super().__init__(vector_size, hnsw_ef_search=hnsw_ef_search, ivf_nprobe=ivf_nprobe)
        if index_path is None or not os.path.isdir(index_path):
            raise IndexNotFoundError(
                f"index_name='legacy' needs RagConfig.index_path: a local folder with DPR's files ({INDEX_FILE}, "
                f"{META_NPY} or {META_PICKLE}, {PASSAGES_TSV} or {PASSAGES_PICKLE}); got {index_path!r}. "
                "Nothing is downloaded."
            )
        self.index_path = os.fspath(index_path)
        self.allow_pickle = allow_pickle
        self._files = {
            "index": self._pick(INDEX_FILE, None),
            "meta": self._pick(META_NPY, META_PICKLE),
            "passages": self._pick(PASSAGES_TSV, PASSAGES_PICKLE),
        }
        self._row_to_db: Optional[np.ndarray] = None

    def _pick(self, safe: str, pickled: Optional[str]) -> tuple[str, bool]:
        path = os.path.join(self.index_path, safe)
        if os.path.isfile(path):
            return path, False
        if pickled is not None and os.path.isfile(os.path.join(self.index_path, pickled)):
            if not self.allow_pickle:
                raise PickleNotAllowedError(
                    f"{self.index_path!r} holds only the pickled {pickled}; reading pickle can run arbitrary code. "
                    f"Provide {safe} instead, or pass allow_pickle=True if you trust the file"
                )
            return os.path.join(self.index_path, pickled), True
        names = safe if pickled is None else f"{safe} (or, with allow_pickle=True, {pickled})"
        raise IndexNotFoundError(f"legacy index folder {self.index_path!r} has no {names}")

    # === Loading ===
    def _load(self):
        faiss_index = read_faiss_index(self._files["index"][0], "legacy index")
        meta_path, meta_pickled = self._files["meta"]
        try:
            raw = _load_pickle(meta_path) if meta_pickled else np.load(meta_path, allow_pickle=False)
            self._row_to_db = np.asarray([int(x) for x in raw] if meta_pickled else raw, dtype=np.int64).reshape(-1)
        except (OSError, ValueError, TypeError) as err:
            raise IndexFormatError(f"legacy index meta {meta_path!r} is unreadable: {err}") from None
        self._db_sorted = np.argsort(self._row_to_db, kind="stable")
        self._db_sorted_values = self._row_to_db[self._db_sorted]
        passages = self._read_passages()
        ids = passages.table.column("id").to_numpy(zero_copy_only=False).astype(np.int64)
        self._passage_order = np.argsort(ids, kind="stable")
        self._passage_ids_sorted = ids[self._passage_order]
        return faiss_index, passages

    def _read_passages(self) -> PassageStore:
        import pyarrow as pa

        path, pickled = self._files["passages"]
        if pickled:
            data = _load_pickle(path)  # {id: (text, title)}
            keys = list(data)
            table = pa.table(
                {"id": [int(k) for k in keys], "text": [data[k][0] for k in keys], "title": [data[k][1] for k in keys]}
            )
        else:
            import pyarrow.csv as pacsv

            try:
                table = pacsv.read_csv(
                    path,
                    parse_options=pacsv.ParseOptions(delimiter="\t", quote_char='"', double_quote=True, newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(column_types={"id": pa.int64(), "text": pa.string(), "title": pa.string()}),
                )
            except (pa.ArrowInvalid, OSError) as err:
                raise IndexFormatError(f"legacy passages {path!r} are not DPR's TSV (id, text, title): {err}") from None
            if "id" not in table.column_names:
                raise IndexFormatError(f"legacy passages {path!r} have no 'id' column (DPR's TSV header: id, text, title)")
        return PassageStore(table, f"legacy passages {path!r}", require_embeddings=False)

    def _expected_ntotal(self, passages) -> int:
        return len(self._row_to_db)

    # === Hooks ===
    def _query_dim(self) -> int:
        return self.vector_size + 1

    def _queries(self, question_hidden_states: np.ndarray) -> np.ndarray:
        zeros = np.zeros((len(question_hidden_states), 1), dtype=np.float32)
        return np.ascontiguousarray(np.hstack([question_hidden_states, zeros]))

    def _rows_to_doc_ids(self, rows: np.ndarray) -> np.ndarray:
        return np.where(rows >= 0, self._row_to_db[np.maximum(rows, 0)], -1)

    def _doc_ids_to_rows(self, doc_ids: np.ndarray) -> np.ndarray:
        return self._lookup(self._db_sorted_values, self._db_sorted, doc_ids, "the legacy index")

    def _embeddings(self, rows: np.ndarray) -> np.ndarray:
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, self.vector_size), dtype=np.float32)
        for i in np.flatnonzero(flat >= 0):
            out[i] = self._faiss_index.reconstruct(int(flat[i]))[:-1]  # drop the phi dimension
        return out.reshape(*rows.shape, self.vector_size)

    def _passage_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        passage_rows = np.full(rows.shape, -1, dtype=np.int64)
        valid = rows >= 0
        db_ids = self._row_to_db[rows[valid]]
        sorted_ids = self._passage_ids_sorted
        pos = np.searchsorted(sorted_ids, db_ids)
        found = (pos < len(sorted_ids)) & (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == db_ids)
        if not found.all():
            raise IndexFormatError(f"passage ids {db_ids[~found][:5].tolist()} of the legacy index are not in the passages file")
        passage_rows[valid] = self._passage_order[pos]
        return passage_rows

    def get_passages(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        self._require_initialized()
        return self._passages.passages(self._passage_rows(rows))

    @staticmethod
    def _lookup(sorted_values: np.ndarray, order: np.ndarray, keys: np.ndarray, where: str) -> np.ndarray:
        pos = np.searchsorted(sorted_values, keys)
        found = (pos < len(sorted_values)) & (sorted_values[np.minimum(pos, len(sorted_values) - 1)] == keys)
        if not found.all():
            raise RetrievalInputError(f"doc ids {keys[~found][:5].tolist()} are not in {where}")
        return order[pos]

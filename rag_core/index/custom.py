"""`CustomIndex` (`index_name="custom"`): your own passages and faiss index, read from disk.

Two layouts load:

- the original's: `passages_path` is a folder written by `Dataset.save_to_disk` (columns `title`,
  `text`, `embeddings`) and `index_path` a faiss index file (`dataset.get_index("embeddings").save(...)`);
- ours, written by `python -m rag_core.build_index`: one folder holding `passages/`, `index.faiss`
  and `manifest.json`. Point `passages_path` at the folder; `index_path` may stay `None`.

A folder whose build did not finish carries an `.incomplete` marker (the builder writes into a
temporary folder and renames it only when complete, so this only happens when someone points at
the temporary folder); it is refused, and so is a manifest whose counts disagree with the files.

Example:
    >>> index = CustomIndex(vector_size=384, dataset_path="my_kb")   # a build_index output
    >>> index.init_index()
    >>> doc_ids, doc_embeds = index.get_top_docs(question_vectors, n_docs=5)
"""

from __future__ import annotations

import json
import os
from typing import Optional

from .base import DenseIndex, IndexFormatError, IndexNotFoundError, read_faiss_index
from .passages import PassageStore

MANIFEST = "manifest.json"
INCOMPLETE_MARKER = ".incomplete"
PASSAGES_DIR = "passages"
INDEX_FILE = "index.faiss"
LAYOUT_VERSION = 1


def read_manifest(folder: str) -> Optional[dict]:
    """The build manifest of a `build_index` folder, None when the folder is not one."""
    if os.path.exists(os.path.join(folder, INCOMPLETE_MARKER)):
        raise IndexFormatError(
            f"{folder!r} holds an index whose build did not finish ({INCOMPLETE_MARKER} marker present); "
            "rebuild it with `python -m rag_core.build_index`"
        )
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{path!r} is unreadable: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "rag_core.custom_index":
        raise IndexFormatError(f"{path!r} is not a rag_core index manifest")
    return manifest


class CustomIndex(DenseIndex):
    """Passages saved with `datasets` plus a faiss index file. See the module docstring."""

    _LOADED = DenseIndex._LOADED + ("_dataset",)

    def __getstate__(self) -> dict:
        if self.dataset_path is None:
            raise TypeError(
                "this CustomIndex wraps an in-memory dataset and faiss index (CustomIndex.from_dataset / "
                "indexed_dataset=): it has no files to be loaded from in another process. Save it with "
                "retriever.save_pretrained(folder) and send RagRetriever.from_pretrained(folder) instead"
            )
        return super().__getstate__()

    def __init__(
        self,
        vector_size: int,
        dataset_path: Optional[str] = None,
        index_path: Optional[str] = None,
        hnsw_ef_search: Optional[int] = None,
        ivf_nprobe: Optional[int] = None,
        rerank_k_factor: Optional[int] = None,
    ):
        super().__init__(vector_size, hnsw_ef_search=hnsw_ef_search, ivf_nprobe=ivf_nprobe, rerank_k_factor=rerank_k_factor)
        self._dataset = None
        self._given_faiss_index = None
        self.manifest: Optional[dict] = None
        if dataset_path is None:
            raise IndexNotFoundError(
                "index_name='custom' needs RagConfig.passages_path: a folder written by Dataset.save_to_disk "
                "(columns title, text, embeddings) or by `python -m rag_core.build_index`"
            )
        dataset_path = os.fspath(dataset_path)
        if not os.path.exists(dataset_path):
            raise IndexNotFoundError(f"passages_path {dataset_path!r} does not exist")
        folder_manifest = read_manifest(dataset_path) if os.path.isdir(dataset_path) else None
        if folder_manifest is not None:  # our layout: the folder itself
            self.manifest = folder_manifest
            if index_path is None:
                index_path = os.path.join(dataset_path, INDEX_FILE)
            dataset_path = os.path.join(dataset_path, PASSAGES_DIR)
        else:
            parent = os.path.dirname(os.path.abspath(dataset_path))
            self.manifest = read_manifest(parent) if os.path.isfile(os.path.join(parent, MANIFEST)) else None
            if os.path.exists(os.path.join(parent, INCOMPLETE_MARKER)):
                read_manifest(parent)  # raises
        if index_path is None:
            raise IndexNotFoundError(
                f"index_name='custom' needs RagConfig.index_path: the faiss index file of the passages in "
                f"{dataset_path!r} (written by dataset.get_index('embeddings').save(path)), or a passages_path "
                "folder written by `python -m rag_core.build_index`"
            )
        index_path = os.fspath(index_path)
        if not os.path.isfile(index_path):
            raise IndexNotFoundError(
                f"index_path {index_path!r} does not exist (or is not a file); it must be the faiss index of "
                f"the passages in {dataset_path!r}"
            )
        self.dataset_path = dataset_path
        self.index_path = index_path
        if self.rerank_k_factor is None and self.manifest is not None:
            self.rerank_k_factor = self.manifest.get("rerank_k_factor")

    @classmethod
    def from_dataset(cls, dataset, vector_size: Optional[int] = None, faiss_index=None, **kwargs) -> "CustomIndex":
        """Wrap an in-memory `datasets.Dataset` (columns title, text, embeddings) and its faiss index.

        `faiss_index` defaults to the one attached with `dataset.add_faiss_index("embeddings")`,
        as the original's `RagRetriever.from_pretrained(..., indexed_dataset=dataset)` expects.
        The result is initialised already.
        """
        if faiss_index is None:
            try:
                faiss_index = dataset.get_index("embeddings").faiss_index
            except Exception:
                raise IndexFormatError(
                    "the dataset has no faiss index on column 'embeddings': call "
                    "dataset.add_faiss_index('embeddings') first, or pass faiss_index="
                ) from None
        passages = PassageStore.from_dataset(dataset, source="indexed_dataset")
        self = cls.__new__(cls)
        DenseIndex.__init__(self, vector_size if vector_size is not None else faiss_index.d, **kwargs)
        self._dataset, self._given_faiss_index, self.manifest = dataset, faiss_index, None
        self.dataset_path = self.index_path = None
        self._given_passages = passages
        self.init_index()
        return self

    def _load(self):
        if self._given_faiss_index is not None:
            return self._given_faiss_index, self._given_passages
        passages = PassageStore.from_disk(self.dataset_path, what="passages_path")
        faiss_index = read_faiss_index(self.index_path, "index_path")
        if self.manifest is not None:
            expected = self.manifest.get("num_passages")
            if expected is not None and expected != len(passages):
                raise IndexFormatError(
                    f"the manifest says {expected} passages but {self.dataset_path!r} holds {len(passages)}"
                )
        return faiss_index, passages

    def stored_ids_fingerprint(self) -> Optional[str]:
        self._require_initialized()
        if self.manifest is None or not self._passages.has_stored_ids:
            return None
        return (self.manifest.get("generator_ids") or {}).get("fingerprint")

    @property
    def dataset(self):
        """The passages as a `datasets.Dataset` (loaded on first use)."""
        if self._dataset is None:
            import datasets

            self._dataset = datasets.load_from_disk(self.dataset_path)
        return self._dataset

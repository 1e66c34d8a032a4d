"""`CanonicalIndex` (`index_name="exact"` or `"compressed"`): the wiki_dpr knowledge base, from local files.

The original loaded `wiki_dpr` through a dataset loading script that downloaded ~80 GB on first
use. Here nothing is downloaded: you point at files you already have.

- passages (`RagConfig.passages_path` or `dataset_path=`): a folder written by
  `Dataset.save_to_disk` (columns `title`, `text`, `embeddings`, e.g. `load_dataset(...)` followed
  by `save_to_disk`), or a folder of Parquet shards with those columns (the layout of the
  `wiki_dpr` repository on the Hub; read through datasets' built-in Parquet reader, which writes
  one memory-mapped Arrow cache on first use);
- the faiss index (`RagConfig.index_path`): a file, or `None` to look in the passages folder for
  wiki_dpr's file name of that variant (table `INDEX_FILES`).

Variants: `exact` is DPR's HNSW index with 8-bit scalar quantisation (`efSearch` from
`RagConfig.hnsw_ef_search`), `compressed` the IVF-PQ index with an HNSW coarse quantiser
(`nprobe` from `RagConfig.ivf_nprobe`, `efSearch` for the quantiser). The original's compressed
index keeps only ~0.6 top-10 overlap with exact search; `rerank_k_factor=k` re-scores `k * n_docs`
candidates with the exact embeddings stored beside the passages.
"""

from __future__ import annotations

import glob
import os
from typing import Optional

from .base import DenseIndex, IndexFormatError, IndexNotFoundError, read_faiss_index
from .passages import PassageStore

# wiki_dpr's index file names per variant ({split} is the dataset split, e.g. "train").
INDEX_FILES = {
    "exact": ("psgs_w100.nq.HNSW128_SQ8-IP-{split}.faiss", "psgs_w100.multiset.HNSW128_SQ8-IP-{split}.faiss"),
    "compressed": (
        "psgs_w100.nq.IVF4096_HNSW128_PQ128-IP-{split}.faiss",
        "psgs_w100.multiset.IVF4096_HNSW128_PQ128-IP-{split}.faiss",
    ),
}


class CanonicalIndex(DenseIndex):
    """The wiki_dpr passages and one of its two faiss indexes, from local files (see the module docstring)."""

    def __init__(
        self,
        vector_size: int,
        index_name: str = "compressed",
        dataset_path: Optional[str] = None,
        index_path: Optional[str] = None,
        dataset_split: str = "train",
        hnsw_ef_search: Optional[int] = None,
        ivf_nprobe: Optional[int] = None,
        rerank_k_factor: Optional[int] = None,
        cache_dir: Optional[str] = None,
    ):
        super().__init__(vector_size, hnsw_ef_search=hnsw_ef_search, ivf_nprobe=ivf_nprobe, rerank_k_factor=rerank_k_factor)
        if index_name not in INDEX_FILES:
            raise ValueError(f"CanonicalIndex variant must be one of {sorted(INDEX_FILES)}, got {index_name!r}")
        self.index_name = index_name
        self.dataset_split = dataset_split
        expected = [name.format(split=dataset_split) for name in INDEX_FILES[index_name]]
        if dataset_path is None:
            raise IndexNotFoundError(
                f"index_name={index_name!r} reads wiki_dpr from local files and never downloads it: set "
                "RagConfig.passages_path (or pass dataset_path=) to a folder holding the passages (a "
                "Dataset.save_to_disk folder or Parquet shards with columns title, text, embeddings), and "
                f"RagConfig.index_path to the faiss index file (wiki_dpr names it {expected[0]!r})"
            )
        dataset_path = os.fspath(dataset_path)
        if not os.path.isdir(dataset_path):
            raise IndexNotFoundError(f"wiki_dpr passages folder {dataset_path!r} does not exist")
        if index_path is None:
            found = [os.path.join(dataset_path, n) for n in expected if os.path.isfile(os.path.join(dataset_path, n))]
            if not found:
                raise IndexNotFoundError(
                    f"no faiss index for index_name={index_name!r} in {dataset_path!r}: expected one of "
                    f"{expected} there, or set RagConfig.index_path to the index file"
                )
            index_path = found[0]
        index_path = os.fspath(index_path)
        if not os.path.isfile(index_path):
            raise IndexNotFoundError(f"index_path {index_path!r} (the {index_name!r} wiki_dpr faiss index) does not exist")
        self.dataset_path, self.index_path = dataset_path, index_path
        self.cache_dir = cache_dir  # where datasets writes the Arrow cache of Parquet shards

    def _load(self):
        if os.path.isfile(os.path.join(self.dataset_path, "state.json")):
            passages = PassageStore.from_disk(self.dataset_path, what="wiki_dpr passages")
        else:
            shards = sorted(glob.glob(os.path.join(self.dataset_path, "**", "*.parquet"), recursive=True))
            split_shards = [s for s in shards if os.path.basename(s).startswith(self.dataset_split)]
            shards = split_shards or shards
            if not shards:
                raise IndexNotFoundError(
                    f"wiki_dpr passages folder {self.dataset_path!r} holds neither a Dataset.save_to_disk "
                    "folder (state.json) nor Parquet shards (*.parquet)"
                )
            import datasets

            try:
                dataset = datasets.Dataset.from_parquet(shards, cache_dir=self.cache_dir)
            except Exception as err:
                raise IndexFormatError(f"wiki_dpr Parquet shards in {self.dataset_path!r} are unreadable: {err}") from None
            passages = PassageStore.from_dataset(dataset, source=f"wiki_dpr passages {self.dataset_path!r}")
        return read_faiss_index(self.index_path, f"{self.index_name} index_path"), passages


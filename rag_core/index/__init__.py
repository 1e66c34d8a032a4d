"""Dense indexes for `RagRetriever`: the interface, the four kinds `RagConfig.index_name` selects, errors.

| `index_name` | class | files |
|---|---|---|
| `custom` | `CustomIndex` | `Dataset.save_to_disk` passages + faiss file, or a `build_index` folder |
| `custom` | `ShardedIndex` | a `build_index --shards` folder (`shards.json`), given as passages_path or index_path |
| `exact`, `compressed` | `CanonicalIndex` | wiki_dpr passages and its HNSW-SQ8 / IVF-PQ index, local |
| `legacy` | `LegacyIndex` | DPR's own index and passages (pickle only with `allow_pickle=True`) |

Imports neither torch, tensorflow nor transformers.
"""

from __future__ import annotations

from typing import Optional

from .base import (
    DEFAULT_HNSW_EF_SEARCH,
    DEFAULT_IVF_NPROBE,
    DenseIndex,
    Index,
    IndexFormatError,
    IndexNotFoundError,
    IndexNotInitializedError,
    RetrievalInputError,
    apply_search_parameters,
    check_n_docs,
    check_question_hidden_states,
)
from .canonical import CanonicalIndex
from .custom import CustomIndex
from .legacy import LegacyIndex, PickleNotAllowedError
from .passages import PassageStore
from .sharded import ShardedIndex, is_sharded_folder
from ..errors import UnknownIndexError  # noqa: F401 (re-exported)

INDEX_CLASSES = {"custom": CustomIndex, "exact": CanonicalIndex, "compressed": CanonicalIndex, "legacy": LegacyIndex}


def index_from_config(config, dataset_path: Optional[str] = None, allow_pickle: bool = False) -> Index:
    """The index `config.index_name` selects, constructed (files checked) but not loaded.

    `dataset_path` overrides `config.passages_path`; `allow_pickle` is passed to the legacy index.
    """
    name = config.index_name
    search = dict(hnsw_ef_search=config.hnsw_ef_search, ivf_nprobe=config.ivf_nprobe)
    passages_path = dataset_path if dataset_path is not None else config.passages_path
    if name == "custom":
        sharded = next((p for p in (passages_path, config.index_path) if is_sharded_folder(p)), None)
        if sharded is not None:  # a `build_index --shards` folder
            return ShardedIndex(config.retrieval_vector_size, sharded, **search)
        return CustomIndex(config.retrieval_vector_size, passages_path, config.index_path, **search)
    if name in ("exact", "compressed"):
        return CanonicalIndex(
            config.retrieval_vector_size,
            index_name=name,
            dataset_path=passages_path,
            index_path=config.index_path,
            dataset_split=config.dataset_split,
            **search,
        )
    if name == "legacy":
        return LegacyIndex(config.retrieval_vector_size, config.index_path, allow_pickle=allow_pickle, **search)
    raise UnknownIndexError(f"unknown index_name {name!r}; expected one of {sorted(INDEX_CLASSES)}")


__all__ = [
    "CanonicalIndex",
    "CustomIndex",
    "DEFAULT_HNSW_EF_SEARCH",
    "DEFAULT_IVF_NPROBE",
    "DenseIndex",
    "INDEX_CLASSES",
    "Index",
    "IndexFormatError",
    "IndexNotFoundError",
    "IndexNotInitializedError",
    "LegacyIndex",
    "PassageStore",
    "PickleNotAllowedError",
    "RetrievalInputError",
    "ShardedIndex",
    "UnknownIndexError",
    "apply_search_parameters",
    "check_n_docs",
    "check_question_hidden_states",
    "index_from_config",
]

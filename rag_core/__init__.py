"""Framework-neutral core of the RAG library: config, tokenizer pair, retriever, indexes, outputs.

Imports neither torch nor tensorflow. Names are loaded lazily (PEP 562), so that
`import rag_core` is cheap and reading an index does not import transformers at all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "RagError": "rag_core.errors",
    "RagInputError": "rag_core.errors",
    "RagConfigError": "rag_core.errors",
    "RetrievalInputError": "rag_core.errors",
    "ContextInputError": "rag_core.errors",
    "UnknownIndexError": "rag_core.errors",
    "UnsupportedModelError": "rag_core.errors",
    "IndexNotFoundError": "rag_core.errors",
    "IndexFormatError": "rag_core.errors",
    "IndexNotInitializedError": "rag_core.errors",
    "PassagesError": "rag_core.errors",
    "OutputExistsError": "rag_core.errors",
    "PickleNotAllowedError": "rag_core.errors",
    "WeightConversionError": "rag_core.errors",
    "SubModelWeightError": "rag_core.errors",
    "TrainingDataError": "rag_core.errors",
    "ResumeError": "rag_core.errors",
    "CheckpointError": "rag_core.errors",
    "CheckpointNotFoundError": "rag_core.errors",
    "NotAFolderError": "rag_core.errors",
    "MissingExtraError": "rag_core.errors",
    "IndexServiceError": "rag_core.errors",
    "ShardUnavailableError": "rag_core.errors",
    "TokenizerInputError": "rag_core.errors",
    "RagConfig": "rag_core.configuration_rag",
    "RagTokenizer": "rag_core.tokenization_rag",
    "RetrievAugLMOutput": "rag_core.outputs",
    "RetrievAugLMMarginOutput": "rag_core.outputs",
    "RetrievAugGenerateOutput": "rag_core.outputs",
    "RagRetriever": "rag_core.retrieval_rag",
    "Index": "rag_core.index",
    "CustomIndex": "rag_core.index",
    "CanonicalIndex": "rag_core.index",
    "LegacyIndex": "rag_core.index",
    "ShardedIndex": "rag_core.index",
    "RayIndex": "rag_core.serving",
    "RayIndexService": "rag_core.serving",
    "contexts_from_passages": "rag_core.contexts",
    "invalid_doc_mask": "rag_core.contexts",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rag_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from .errors import (
        CheckpointError, CheckpointNotFoundError, ContextInputError, IndexFormatError, IndexNotFoundError, IndexNotInitializedError, IndexServiceError, MissingExtraError, NotAFolderError, OutputExistsError, PassagesError, PickleNotAllowedError, RagConfigError, RagError, RagInputError, ResumeError, RetrievalInputError, ShardUnavailableError, SubModelWeightError, TokenizerInputError, TrainingDataError, UnknownIndexError, UnsupportedModelError, WeightConversionError,
    )
    from .configuration_rag import RagConfig
    from .contexts import contexts_from_passages, invalid_doc_mask
    from .index import CanonicalIndex, CustomIndex, Index, LegacyIndex, ShardedIndex
    from .outputs import RetrievAugGenerateOutput, RetrievAugLMMarginOutput, RetrievAugLMOutput
    from .retrieval_rag import RagRetriever
    from .serving import RayIndex, RayIndexService
    from .tokenization_rag import RagTokenizer

"""Framework-neutral core of the RAG library: config, tokenizer pair, retriever, indexes, outputs.

Imports neither torch nor tensorflow. Names are loaded lazily (PEP 562), so that
`import rag_core` is cheap and reading an index does not import transformers at all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "RagConfig": "rag_core.configuration_rag",
    "RagConfigError": "rag_core.configuration_rag",
    "RagTokenizer": "rag_core.tokenization_rag",
    "RetrievAugLMOutput": "rag_core.outputs",
    "RetrievAugLMMarginOutput": "rag_core.outputs",
    "RetrievAugGenerateOutput": "rag_core.outputs",
    "RagInputError": "rag_core.arguments",
    "RagRetriever": "rag_core.retrieval_rag",
    "Index": "rag_core.index",
    "CustomIndex": "rag_core.index",
    "CanonicalIndex": "rag_core.index",
    "LegacyIndex": "rag_core.index",
    "RetrievalInputError": "rag_core.index",
    "IndexNotFoundError": "rag_core.index",
    "IndexFormatError": "rag_core.index",
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
    from .arguments import RagInputError
    from .configuration_rag import RagConfig, RagConfigError
    from .contexts import contexts_from_passages, invalid_doc_mask
    from .index import CanonicalIndex, CustomIndex, Index, IndexFormatError, IndexNotFoundError, LegacyIndex, RetrievalInputError
    from .outputs import RetrievAugGenerateOutput, RetrievAugLMMarginOutput, RetrievAugLMOutput
    from .retrieval_rag import RagRetriever
    from .tokenization_rag import RagTokenizer

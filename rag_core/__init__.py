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
    from .outputs import RetrievAugGenerateOutput, RetrievAugLMMarginOutput, RetrievAugLMOutput
    from .tokenization_rag import RagTokenizer

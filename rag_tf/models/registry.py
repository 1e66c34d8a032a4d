"""Which Keras sub-model implements a sub-config's `model_type`, and how its weights are named.

A RAG checkpoint names its sub-models' weights `rag.question_encoder.<name>` and
`rag.generator.<name>` (heads) or `question_encoder.<name>` / `generator.<name>` (`RagModel`),
where `<name>` is the sub-model's own PyTorch name. The classes here know their `<name>`s
(`pt_weight_table`), so the same table reads and writes both frameworks' `model.safetensors`.
"""

from __future__ import annotations

import importlib
from typing import Any

from rag_core.errors import UnsupportedModelError  # noqa: F401 (re-exported)

# model_type -> (module, class); modules are imported on first use
QUESTION_ENCODERS = {
    "dpr": ("rag_tf.models.bert", "TFDPRQuestionEncoder"),
    "bert": ("rag_tf.models.bert", "TFBertModel"),
}
CONTEXT_ENCODERS = {
    "dpr": ("rag_tf.models.bert", "TFDPRContextEncoder"),
    "bert": ("rag_tf.models.bert", "TFBertModel"),
}
GENERATORS = {
    "bart": ("rag_tf.models.bart", "TFBartForConditionalGeneration"),
    "t5": ("rag_tf.models.t5", "TFT5ForConditionalGeneration"),
}


def _model_class(table: dict, config: Any, role: str):
    model_type = getattr(config, "model_type", None)
    if model_type not in table:
        raise UnsupportedModelError(
            f"rag_tf has no TensorFlow {role} for model_type {model_type!r}; supported: {sorted(table)}"
        )
    module, name = table[model_type]
    return getattr(importlib.import_module(module), name)


def build_question_encoder(config: Any, **kwargs):
    return _model_class(QUESTION_ENCODERS, config, "question encoder")(config, **kwargs)


def build_context_encoder(config: Any, **kwargs):
    return _model_class(CONTEXT_ENCODERS, config, "context encoder")(config, **kwargs)


def build_generator(config: Any, **kwargs):
    return _model_class(GENERATORS, config, "generator")(config, **kwargs)


def check_supported(config: Any) -> None:
    """Raise `UnsupportedModelError` before anything is built when a RagConfig's sub-models are not implemented."""
    _model_class(QUESTION_ENCODERS, config.question_encoder, "question encoder")
    _model_class(GENERATORS, config.generator, "generator")


def load_question_encoder(name_or_path, config=None, allow_pickle: bool = False, **kwargs):
    """A stand-alone question encoder checkpoint (DPR question encoder or BERT, e.g. the packaged
    MiniLM) in transformers' layout, as the Keras model of this package."""
    from .checkpoint import load_sub_model

    return load_sub_model(lambda c: build_question_encoder(c, **kwargs), name_or_path, config, allow_pickle)


def load_generator(name_or_path, config=None, allow_pickle: bool = False, **kwargs):
    """A stand-alone BART or T5 checkpoint in transformers' layout, as the Keras model of this package."""
    from .checkpoint import load_sub_model

    return load_sub_model(lambda c: build_generator(c, **kwargs), name_or_path, config, allow_pickle)

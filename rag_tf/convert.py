"""`TFRagPreTrainedModel.from_pretrained(path, from_pt=True)`: load a PyTorch RAG checkpoint.

transformers' own `from_pt=True` needs torch and builds the model by calling it on dummy inputs
without a retriever or context, which a RAG model rejects. We convert instead: `rag_core.convert`
maps `model.safetensors` through the explicit weight table into a temporary `tf_model.h5` in Keras'
layout, and the regular loader reads it, with its usual report of missing and unexpected weights.
No torch is imported.

A checkpoint with only `pytorch_model.bin` (a pickle) is refused with a `WeightConversionError`
that says how to proceed, unless `allow_pickle=True` is passed:
`TFRag*.from_pretrained(path, from_pt=True, allow_pickle=True)` reads it with the converter's
tensor-only unpickler (`rag_core.convert.read_torch_zip`; no torch). Only for files you trust.
"""

from __future__ import annotations

from typing import Any, Callable

from rag_core.convert import converted_checkpoint


def from_pt_checkpoint(load: Callable[..., Any], path, *model_args, **kwargs) -> Any:
    """`load(converted_path, *model_args, **kwargs)` on a TensorFlow copy of the PyTorch checkpoint at `path`.
    `allow_pickle` (default False) is taken from `kwargs` for the converter, never passed to `load`."""
    allow_pickle = kwargs.pop("allow_pickle", False)
    with converted_checkpoint(path, to="tf", allow_pickle=allow_pickle) as converted:
        loaded = load(converted, *model_args, **kwargs)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model.config._name_or_path = str(path)  # not the temporary copy
    return loaded

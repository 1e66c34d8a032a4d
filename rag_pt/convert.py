"""`RagPreTrainedModel.from_pretrained(path, from_tf=True)`: load a TensorFlow RAG checkpoint.

transformers' own `from_tf=True` builds transformers' TF RAG class to read the weights, which is
both the original RAG (never called by this library) and unable to load RAG checkpoints. We
convert instead: `rag_core.convert` maps `tf_model.h5` through the explicit weight table into a
temporary `model.safetensors` (numpy only, no TensorFlow needed), and the regular loader reads it,
with its usual report of missing and unexpected weights.
"""

from __future__ import annotations

from typing import Any, Callable

from rag_core.convert import converted_checkpoint


def from_tf_checkpoint(load: Callable[..., Any], path, *model_args, **kwargs) -> Any:
    """`load(converted_path, *model_args, **kwargs)` on a PyTorch copy of the TF checkpoint at `path`."""
    with converted_checkpoint(path, to="pt") as converted:
        loaded = load(converted, *model_args, **kwargs)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model.config._name_or_path = str(path)  # not the temporary copy
    return loaded

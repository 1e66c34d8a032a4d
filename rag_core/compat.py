"""The differences between transformers 4.x and 5.x that the library depends on, in one place.

Everything version-dependent is decided here, once, from the installed version (read from the
package metadata, so importing this module imports neither transformers nor a framework); the
rest of the library calls these names instead of testing versions itself.

What changed in transformers 5, as far as RAG is concerned:

- the decoder cache travels under the keyword `cache` (model arguments, `generate`'s model
  kwargs and model outputs); 4.x calls it `past_key_values`;
- a `GenerationConfig` leaves unset settings as `None` (the global defaults are applied inside
  `generate`); 4.x stores the defaults in the object.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Optional


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


TRANSFORMERS_VERSION: str = importlib.metadata.version("transformers")
TRANSFORMERS_5: bool = _major(TRANSFORMERS_VERSION) >= 5

# The name of the decoder cache in model arguments, generate's model kwargs and model outputs.
CACHE_KWARG: str = "cache" if TRANSFORMERS_5 else "past_key_values"

# The generation settings the library reads itself, with transformers' global defaults.
_GENERATION_DEFAULTS = {"length_penalty": 1.0, "max_length": 20, "num_beams": 1, "num_return_sequences": 1}


def cache_kwargs(cache: Any) -> dict:
    """`{name: cache}` for calling a transformers model with a decoder cache (None: no cache)."""
    return {CACHE_KWARG: cache}


def output_cache(outputs: Any) -> Any:
    """The decoder cache of a transformers model output, None when it has none."""
    return getattr(outputs, CACHE_KWARG, None)


def generation_setting(generation_config: Any, name: str, overrides: Optional[dict] = None) -> Any:
    """A generation setting as `generate` resolves it: `overrides[name]`, else the config's value,
    else transformers' global default (transformers 5 keeps unset settings as None)."""
    if overrides and overrides.get(name) is not None:
        return overrides[name]
    value = getattr(generation_config, name, None)
    if value is None:
        value = _GENERATION_DEFAULTS.get(name)
    return value


def batch_encoding(data: dict, return_tensors: Optional[str]):
    """`BatchEncoding(data, tensor_type=return_tensors)`, also for `"tf"` under transformers 5, which
    dropped TensorFlow from its tensor types: the values are converted with the TensorFlow the caller
    has imported (asking for TF tensors means using TF; this module never imports it)."""
    import sys

    from transformers import BatchEncoding

    if return_tensors != "tf" or not TRANSFORMERS_5:
        return BatchEncoding(data, tensor_type=return_tensors)
    tf = sys.modules.get("tensorflow")
    if tf is None:
        raise ImportError("return_tensors='tf' needs TensorFlow: import tensorflow first")
    encoding = BatchEncoding(data, tensor_type="np")
    for key in list(encoding.keys()):
        encoding[key] = tf.convert_to_tensor(encoding[key])
    return encoding


def framework_to_numpy(value: Any) -> Any:
    """A TensorFlow tensor as numpy (transformers 5's tokenizers no longer take TF tensors); anything
    else unchanged. Duck-typed: no framework is imported."""
    if type(value).__module__.startswith("tensorflow") and hasattr(value, "numpy"):
        return value.numpy()
    return value

"""RAG models in TensorFlow/Keras 3: `TFRagModel`, `TFRagSequenceForGeneration`, `TFRagTokenForGeneration`.

Mirrors `rag_pt` file for file and method for method (TF names carry the `TF` prefix), on this
package's own Keras 3 sub-models (`rag_tf.models`: BART, T5, BERT, DPR). Never imports torch,
tf-keras or any transformers TensorFlow class; transformers is used for configs, tokenizers and
`GenerationConfig` only.

TensorFlow quirks, recorded here once:

- Keras 3: `import keras` or `tf.keras` (TensorFlow >= 2.16) are the same Keras; any Keras 3
  optimizer compiles. Mixed precision policies (`mixed_bfloat16`, `mixed_float16`) apply to models
  built after the policy is set.
- `build()` timing: variables are created lazily; `from_pretrained` builds every sub-model on a
  dummy input before assigning weights. A model built by hand gets its variables on its first call
  or on `model.ensure_built()`.
- Weights: one `model.safetensors` with transformers' PyTorch names serves both frameworks
  (`rag_tf.models.weights` maps every Keras variable to its PyTorch name); `tf_model.h5` in
  transformers' TensorFlow layout is read, and written with `save_pretrained(..., save_format="h5")`.
- Graph mode: `call` works inside `tf.function` and Keras `fit` (no `run_eagerly`), retrieval
  included. The numpy retriever is reached in exactly one place, `retrieval_bridge.retrieve`,
  through `tf.numpy_function` with fixed output dtypes; shapes are static where the batch size is.
  Input checks read static shapes, so bad input fails at trace time; dimensions unknown while
  tracing (a dynamic batch) are checked by the shapes TensorFlow itself enforces.
- Eager `call`: the first call with a given set of static options (flags, `n_docs`, `training`,
  config) runs op by op; from the second on, the question encoder and the retriever run eagerly and
  everything after retrieval runs as one cached `tf.function` (`TFRagPreTrainedModel._graph_call`).
  `model.run_eagerly = True` or `tf.config.run_functions_eagerly(True)` keep every call op by op.
- XLA: `tf.numpy_function` cannot be compiled, so retrieval stays outside any `jit_compile=True`
  function. Decoding (greedy and beam) is a fixed-shape `tf.while_loop` over the generator's static
  cache (`decoding.py`, the one TF-only file), so `generate(..., jit_compile=True)` compiles the
  encoder and the whole loop once context is retrieved. `prefix_allowed_tokens_fn` calls Python per
  step and therefore runs the loop in graph mode, never under XLA.
- Outputs are the shared `rag_core.outputs` dataclasses (OrderedDict subclasses): `tf.nest`,
  `tf.function` and Keras treat them as mappings.
"""

import importlib
import importlib.util

if importlib.util.find_spec("tensorflow") is None:
    raise ModuleNotFoundError("rag_tf needs TensorFlow (the tensorflow package), which is not installed: "
                              "pip install 'rag-twin[tf]'")

__all__ = ["TFRagPreTrainedModel", "TFRagModel", "TFRagSequenceForGeneration", "TFRagTokenForGeneration"]

_MODULES = {
    "TFRagPreTrainedModel": ".rag_pretrained_model",
    "TFRagModel": ".rag_model",
    "TFRagSequenceForGeneration": ".rag_sequence_for_generation",
    "TFRagTokenForGeneration": ".rag_token_for_generation",
}


def __getattr__(name):
    # Lazy (PEP 562): `import rag_tf.models` does not build the RAG classes.
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

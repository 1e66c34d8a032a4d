"""RAG models in TensorFlow/Keras: `TFRagModel`, `TFRagSequenceForGeneration`, `TFRagTokenForGeneration`.

Mirrors `rag_pt` file for file and method for method (TF names carry the `TF` prefix), on
transformers' TensorFlow sub-models and the Keras 2 API of `tf_keras`. Never imports torch.

TensorFlow quirks, recorded here once:

- Keras 2: transformers' TF models need `tf_keras`; importing this package sets
  `TF_USE_LEGACY_KERAS=1` (unless already set) before TensorFlow is imported. Import `rag_tf`
  before anything else imports TensorFlow, or set the variable yourself.
- `build()` timing: variables are created lazily. `from_pretrained` builds the model in its name
  scope before reading weights, so variable names are those of transformers' TF RAG classes
  (`tf_rag_token_for_generation/rag/generator/...`) and `tf_model.h5` files load both ways. A model
  built by hand gets its variables on its first call or on `model.build_in_name_scope()`.
- Graph mode: `call` works inside `tf.function` and Keras `fit` (no `run_eagerly`), retrieval
  included. The numpy retriever is reached in exactly one place, `retrieval_bridge.retrieve`,
  through `tf.numpy_function` with fixed output dtypes; shapes are static where the batch size is.
  Input checks read static shapes, so bad input fails at trace time; dimensions unknown while
  tracing (a dynamic batch) are checked by the shapes TensorFlow itself enforces.
- Eager `call`: the first call with a given set of static options (flags, `n_docs`, `training`,
  config) runs op by op; from the second on, the question encoder and the retriever run eagerly and
  everything after retrieval runs as one cached `tf.function` (`TFRagPreTrainedModel._graph_call`),
  about 1.4x faster on CPU. Results are the same up to float rounding; gradients flow as usual under
  a `GradientTape`. `model.run_eagerly = True` or `tf.config.run_functions_eagerly(True)` keep every
  call op by op (debugging); inside a `tf.function` or Keras `fit` nothing changes. Swapping a
  sub-layer's variables (`set_output_embeddings`) drops the cached graphs.
- XLA: `tf.numpy_function` cannot be compiled, so retrieval stays outside any `jit_compile=True`
  function. RAG-Token decoding (greedy and beam) is a fixed-shape `tf.while_loop` with a
  preallocated decoder cache (`decoding.py`, the one TF-only file: transformers' TF logits processors
  are eager-only or differ from the PyTorch ones, defect 9), so `generate(..., jit_compile=True)`
  compiles the encoder and the whole loop once context is retrieved. `prefix_allowed_tokens_fn`
  calls Python per step and therefore runs the loop in graph mode, never under XLA.
- Outputs are the shared `rag_core.outputs` dataclasses (OrderedDict subclasses): `tf.nest`,
  `tf.function` and Keras treat them as mappings.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402  (after the environment variable, on purpose)

from .rag_pretrained_model import TFRagPreTrainedModel  # noqa: E402
from .rag_model import TFRagModel  # noqa: E402
from .rag_sequence_for_generation import TFRagSequenceForGeneration  # noqa: E402
from .rag_token_for_generation import TFRagTokenForGeneration  # noqa: E402

__all__ = ["TFRagPreTrainedModel", "TFRagModel", "TFRagSequenceForGeneration", "TFRagTokenForGeneration"]

del tf

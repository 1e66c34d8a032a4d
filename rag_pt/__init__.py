"""RAG models in PyTorch: `RagModel`, `RagSequenceForGeneration`, `RagTokenForGeneration`.

Built on transformers' sub-models (DPR/BERT question encoders, BART/T5 generators), its
`PreTrainedModel` (checkpoints) and its `GenerationMixin` (RAG-Token decoding). The maths of the
losses is in `losses`; the only crossing into numpy (the retriever) is in `retrieval_bridge`.

PyTorch quirks recorded here:
- Device placement: retrieved contexts and passage vectors are moved to the device of the question
  ids / question vectors; the retriever itself always runs on CPU, in float32.
- `generate` runs under `torch.no_grad()`; `forward` is fully differentiable, including into the
  question encoder through `doc_scores` (and into a context encoder set for training).
- transformers 4.x imports TensorFlow at import time whenever it is installed (about 0.6 GB of
  memory for nothing): importing `rag_pt` before transformers sets `USE_TF=0` unless the variable
  is already set (transformers 5 has no TensorFlow classes and ignores it). `rag_pt` itself never
  imports TensorFlow. Without torch installed, importing `rag_pt` says which extra to install.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("torch") is None:
    raise ModuleNotFoundError("rag_pt needs PyTorch, which is not installed: pip install 'rag-twin[torch]'")
if "transformers" not in sys.modules:
    os.environ.setdefault("USE_TF", "0")

from .rag_model import RagModel  # noqa: E402
from .rag_pretrained_model import RagPreTrainedModel  # noqa: E402
from .rag_sequence_for_generation import RagSequenceForGeneration  # noqa: E402
from .rag_token_for_generation import RagTokenForGeneration  # noqa: E402

__all__ = ["RagPreTrainedModel", "RagModel", "RagSequenceForGeneration", "RagTokenForGeneration"]

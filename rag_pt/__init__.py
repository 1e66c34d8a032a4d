"""RAG models in PyTorch: `RagModel`, `RagSequenceForGeneration`, `RagTokenForGeneration`.

Built on transformers' sub-models (DPR/BERT question encoders, BART/T5 generators), its
`PreTrainedModel` (checkpoints) and its `GenerationMixin` (RAG-Token decoding). The maths of the
losses is in `losses`; the only crossing into numpy (the retriever) is in `retrieval_bridge`.

PyTorch quirks recorded here:
- Device placement: retrieved contexts and passage vectors are moved to the device of the question
  ids / question vectors; the retriever itself always runs on CPU, in float32.
- `generate` runs under `torch.no_grad()`; `forward` is fully differentiable, including into the
  question encoder through `doc_scores` (and into a context encoder set for training).
- transformers imports TensorFlow at import time whenever it is installed, unless the environment
  sets `USE_TF=0` before transformers is first imported; `rag_pt` itself never imports it.
"""

from .rag_model import RagModel
from .rag_pretrained_model import RagPreTrainedModel
from .rag_sequence_for_generation import RagSequenceForGeneration
from .rag_token_for_generation import RagTokenForGeneration

__all__ = ["RagPreTrainedModel", "RagModel", "RagSequenceForGeneration", "RagTokenForGeneration"]

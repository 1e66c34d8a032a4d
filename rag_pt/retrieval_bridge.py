"""The one place where the PyTorch models cross into numpy: calling the retriever and coming back.

The retriever (rag_core.RagRetriever, or any object with the same call) speaks numpy. Question ids
and vectors go out as `int64` / `float32` arrays (detached: retrieval is not differentiable);
what comes back is moved to the device and dtype of the question vectors. Gradients reach the
question encoder through `score_documents`, which is plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from rag_core.arguments import INVALID_DOC_SCORE, doc_titles


@dataclass
class Retrieved:
    """What the retriever returned for a batch, as tensors (N = n_docs, D = vector size)."""

    context_input_ids: Tensor  # (B*N, L)
    context_attention_mask: Tensor  # (B*N, L)
    doc_embeds: Tensor  # (B, N, D)
    doc_ids: Optional[Tensor]  # (B, N); -1 marks a slot the index could not fill
    tokenized_doc_ids: Optional[Tensor] = None  # (B*N, Ld) with a ctx-encoder tokenizer
    tokenized_doc_attention_mask: Optional[Tensor] = None


def _to_tensor(value: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(value), device=device).to(dtype)


def retrieve(retriever: Any, input_ids: Tensor, question_vectors: Tensor, *, prefix: Optional[str], n_docs: int) -> Retrieved:
    """Call `retriever` on a batch of questions; `question_vectors` is `(B, D)`."""
    outputs = retriever(
        input_ids.detach().cpu().numpy().astype(np.int64, copy=False),
        question_vectors.detach().to(device="cpu", dtype=torch.float32).numpy(),
        prefix=prefix,
        n_docs=n_docs,
        return_tensors="np",
    )
    ids_device, vec_device, vec_dtype = input_ids.device, question_vectors.device, question_vectors.dtype
    doc_embeds = _to_tensor(outputs["retrieved_doc_embeds"], vec_dtype, vec_device)
    doc_ids = outputs.get("doc_ids")
    doc_ids = _to_tensor(doc_ids, torch.long, ids_device) if doc_ids is not None else None
    tokenized = outputs.get("tokenized_doc_ids")
    tokenized_mask = outputs.get("tokenized_doc_attention_mask")
    return Retrieved(
        context_input_ids=_to_tensor(outputs["context_input_ids"], torch.long, ids_device),
        context_attention_mask=_to_tensor(outputs["context_attention_mask"], torch.long, ids_device),
        doc_embeds=doc_embeds,
        doc_ids=doc_ids,
        tokenized_doc_ids=_to_tensor(tokenized, torch.long, ids_device) if tokenized is not None else None,
        tokenized_doc_attention_mask=(
            _to_tensor(tokenized_mask, torch.long, ids_device) if tokenized_mask is not None else None
        ),
    )


def score_documents(question_vectors: Tensor, doc_embeds: Tensor, doc_ids: Optional[Tensor] = None) -> Tensor:
    """`doc_scores[b, n] = <question b, passage n>`, `(B, N)`; empty slots (id < 0) get `INVALID_DOC_SCORE`.

    The empty-slot score is finite, so the softmax over passages gives them zero probability
    without NaNs, even in a row where every slot is empty. In float16, whose range ends at -65504,
    the score is the dtype's own minimum instead (`empty_slot_score`).
    """
    scores = torch.bmm(question_vectors.unsqueeze(1), doc_embeds.to(question_vectors.dtype).transpose(1, 2)).squeeze(1)
    if doc_ids is not None:
        scores = scores.masked_fill(doc_ids < 0, empty_slot_score(scores.dtype))
    return scores


def empty_slot_score(dtype: torch.dtype) -> float:
    """`INVALID_DOC_SCORE`, or the most negative finite value of `dtype` where that is larger."""
    return max(INVALID_DOC_SCORE, torch.finfo(dtype).min)


def passage_titles(retriever: Any, doc_ids: Optional[Tensor]) -> Optional[list]:
    """Titles of the passages `doc_ids` (`(rows, N)`), via the retriever's index; None without one."""
    if retriever is None or doc_ids is None:
        return None
    return doc_titles(retriever, doc_ids.detach().cpu().numpy())

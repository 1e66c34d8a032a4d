"""The one place where TensorFlow crosses into numpy: the retriever call.

`retrieve` wraps the numpy retriever in `tf.numpy_function` with fixed output dtypes and sets the
static shapes it can (rows = batch * n_docs when the batch size is known while tracing; lengths
stay dynamic), so a model `call` that retrieves works eagerly, inside `tf.function` and in Keras
`fit`. No `.numpy()` anywhere else in the model path.

The question vectors enter through `tf.stop_gradient`: the retriever is not differentiable. The
gradient to the question encoder flows through `doc_scores`, computed in TF from the question
vectors and the passage vectors the retriever returned (`score_documents`).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from rag_core.arguments import INVALID_DOC_SCORE

_KEYS = ("context_input_ids", "context_attention_mask", "retrieved_doc_embeds", "doc_ids")
_DTYPES = (tf.int32, tf.int32, tf.float32, tf.int32)
_TOKENIZED_KEYS = ("tokenized_doc_ids", "tokenized_doc_attention_mask")


def retrieve(
    retriever: Any,
    question_input_ids: tf.Tensor,
    question_hidden_states: tf.Tensor,
    *,
    prefix: Optional[str],
    n_docs: int,
    with_tokenized_docs: bool = False,
) -> dict:
    """Call `retriever` on a batch of questions; return a dict of TF tensors.

    Keys: `context_input_ids` `(B*N, L)` int32, `context_attention_mask` `(B*N, L)` int32,
    `retrieved_doc_embeds` `(B, N, D)` float32, `doc_ids` `(B, N)` int32 (-1: empty slot), and with
    `with_tokenized_docs` the passages tokenized for a context encoder (`(B*N, Ld)` int32 each).
    """
    keys = _KEYS + (_TOKENIZED_KEYS if with_tokenized_docs else ())
    dtypes = _DTYPES + ((tf.int32, tf.int32) if with_tokenized_docs else ())

    def _call(ids: np.ndarray, hidden: np.ndarray):
        out = retriever(ids.astype(np.int64), hidden.astype(np.float32), prefix=prefix, n_docs=n_docs,
                        return_tensors="np")
        missing = [k for k in keys if k not in out]
        if missing:
            raise ValueError(
                f"the retriever returned no {missing}; "
                + ("set a context-encoder tokenizer on it for end-to-end training" if with_tokenized_docs else "")
            )
        return [np.asarray(out[k]).astype(dtype.as_numpy_dtype) for k, dtype in zip(keys, dtypes)]

    tensors = tf.numpy_function(
        _call, [question_input_ids, tf.stop_gradient(question_hidden_states)], list(dtypes), stateful=True,
        name="rag_retrieve",
    )
    batch = question_input_ids.shape[0]
    rows = None if batch is None else batch * n_docs
    dim = question_hidden_states.shape[-1]
    shapes = {
        "context_input_ids": (rows, None),
        "context_attention_mask": (rows, None),
        "retrieved_doc_embeds": (batch, n_docs, dim),
        "doc_ids": (batch, n_docs),
        "tokenized_doc_ids": (rows, None),
        "tokenized_doc_attention_mask": (rows, None),
    }
    result = {}
    for key, tensor in zip(keys, tensors):
        tensor.set_shape(shapes[key])
        result[key] = tensor
    return result


def score_documents(question_vectors: tf.Tensor, doc_embeds: tf.Tensor, doc_ids: Optional[tf.Tensor]) -> tf.Tensor:
    """`(B, N)` inner products of question and passage vectors; empty slots get `INVALID_DOC_SCORE`.

    Differentiable with respect to both vectors (question encoder and, in end-to-end training, the
    context encoder). Always float32.
    """
    # float32 whatever the compute dtype (mixed_float16 / mixed_bfloat16): the scores are few, feed a
    # softmax over the passages, and INVALID_DOC_SCORE (-1e9) would overflow float16 to -inf
    scores = tf.einsum("bd,bnd->bn", tf.cast(question_vectors, tf.float32), tf.cast(doc_embeds, tf.float32))
    if doc_ids is not None:
        scores = tf.where(doc_ids < 0, tf.constant(INVALID_DOC_SCORE, scores.dtype), scores)
    return scores

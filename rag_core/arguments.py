"""Argument resolution and input checks shared by `rag_pt` and `rag_tf`.

Everything here works on plain Python ints and shape tuples, so each framework calls the same
checks (in TF at trace time, where shapes are static) and users get the same error messages from
both. Tensors never enter this module.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .errors import RagInputError  # noqa: F401 (re-exported)


def resolve(value: Any, default: Any) -> Any:
    """`value` unless it is None (never `value or default`: False and 0 are real values)."""
    return default if value is None else value


def resolve_n_docs(n_docs: Optional[int], config_n_docs: int) -> int:
    n_docs = resolve(n_docs, config_n_docs)
    if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 1:
        raise RagInputError(f"n_docs must be a positive integer, got {n_docs!r}")
    return n_docs


def _dim(shape: Sequence[Optional[int]], i: int) -> Optional[int]:
    return None if shape is None or len(shape) <= i else shape[i]


def check_context_inputs(
    *,
    n_docs: int,
    context_input_ids_shape: Optional[Sequence[Optional[int]]],
    context_attention_mask_shape: Optional[Sequence[Optional[int]]],
    doc_scores_shape: Optional[Sequence[Optional[int]]],
    batch_size: Optional[int] = None,
    n_docs_explicit: bool = False,
) -> int:
    """Check precomputed context tensors against each other and `n_docs`; return the batch size.

    Unknown dimensions (None, as in a TF graph with dynamic batch) are skipped, not guessed.
    `n_docs_explicit` says the caller passed `n_docs`: then a disagreement with `doc_scores` is an
    error rather than `doc_scores` silently deciding.
    """
    if context_input_ids_shape is None:
        raise RagInputError(
            "no retriever is set and no `context_input_ids` were given: either pass a retriever "
            "(model.set_retriever(...) or retriever=...) or pass context_input_ids, "
            "context_attention_mask and doc_scores"
        )
    if doc_scores_shape is None:
        raise RagInputError(
            "`doc_scores` is required with `context_input_ids` (shape (batch_size, n_docs)); "
            "without a retriever the model cannot score passages itself"
        )
    if len(doc_scores_shape) != 2:
        raise RagInputError(f"`doc_scores` must have shape (batch_size, n_docs), got rank {len(doc_scores_shape)}")
    if len(context_input_ids_shape) != 2:
        raise RagInputError(
            f"`context_input_ids` must have shape (batch_size * n_docs, length), got rank {len(context_input_ids_shape)}"
        )
    if context_attention_mask_shape is not None and tuple(context_attention_mask_shape) != tuple(context_input_ids_shape):
        if all(d is not None for d in context_attention_mask_shape) and all(d is not None for d in context_input_ids_shape):
            raise RagInputError(
                f"`context_attention_mask` shape {tuple(context_attention_mask_shape)} differs from "
                f"`context_input_ids` shape {tuple(context_input_ids_shape)}"
            )
    scores_batch, scores_docs = _dim(doc_scores_shape, 0), _dim(doc_scores_shape, 1)
    if scores_docs is not None and scores_docs != n_docs:
        if n_docs_explicit:
            raise RagInputError(
                f"n_docs={n_docs} disagrees with `doc_scores`, which holds {scores_docs} passages per question"
            )
    if scores_docs is not None:
        n_docs = scores_docs
    if batch_size is not None and scores_batch is not None and batch_size != scores_batch:
        raise RagInputError(f"`doc_scores` has {scores_batch} rows but the batch has {batch_size} questions")
    batch_size = resolve(batch_size, scores_batch)
    rows = _dim(context_input_ids_shape, 0)
    if rows is not None and batch_size is not None and rows != batch_size * n_docs:
        raise RagInputError(
            f"`context_input_ids` has {rows} rows, expected batch_size * n_docs = {batch_size} * {n_docs} "
            f"= {batch_size * n_docs}"
        )
    return n_docs


def check_labels(labels_shape: Sequence[Optional[int]], max_positions: Optional[int]) -> None:
    """Labels must be (batch, length) and fit the generator's positions (BART's learned positions)."""
    if len(labels_shape) != 2:
        raise RagInputError(f"`labels` must have shape (batch_size, target_length), got rank {len(labels_shape)}")
    length = labels_shape[1]
    if max_positions is not None and length is not None and length > max_positions:
        raise RagInputError(
            f"`labels` are {length} tokens long but the generator handles at most {max_positions} "
            "positions; truncate the targets"
        )


# Score given to a retrieval slot the index could not fill (doc id -1). Finite, so a softmax over a
# row stays NaN-free even when every slot is empty, and low enough that such a slot gets zero
# probability in float32. Both frameworks use this one constant.
INVALID_DOC_SCORE = -1e9


def resolve_bos_token_id(config: Any) -> Optional[int]:
    """The BOS id that `exclude_bos_score` drops: the RAG config's, else the generator's (None for T5)."""
    bos = getattr(config, "bos_token_id", None)
    if bos is None:
        bos = getattr(getattr(config, "generator", None), "bos_token_id", None)
    return bos


# === Shared by rag_pt / rag_tf models ===
RESCORE_MODES = ("thorough", "fast")


def generator_max_positions(generator_config: Any) -> Optional[int]:
    """Longest target the generator can take: BART's learned positions; None for T5 (relative positions)."""
    if getattr(generator_config, "model_type", None) == "t5":
        return None
    return getattr(generator_config, "max_position_embeddings", None)


def resolve_rescore(rescore: Any) -> str:
    if rescore not in RESCORE_MODES:
        raise RagInputError(f"rescore must be one of {RESCORE_MODES}, got {rescore!r}")
    return rescore


def check_generate_inputs(*, has_input_ids: bool, has_context: bool, has_retriever: bool) -> None:
    """`generate` needs questions and a retriever, or precomputed contexts."""
    if has_context:
        return
    if not has_retriever:
        raise RagInputError(
            "no retriever is set and no `context_input_ids` were given: either pass a retriever "
            "(model.set_retriever(...) or retriever=...) or pass context_input_ids, "
            "context_attention_mask and doc_scores"
        )
    if not has_input_ids:
        raise RagInputError("`input_ids` (the questions) are required to retrieve passages when no context is given")


def check_num_return_sequences(num_return_sequences: Any, num_candidates: int) -> int:
    """RAG-Sequence returns at most as many sequences as it generated candidates per question."""
    if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, int) or num_return_sequences < 1:
        raise RagInputError(f"num_return_sequences must be a positive integer, got {num_return_sequences!r}")
    if num_return_sequences > num_candidates:
        raise RagInputError(
            f"num_return_sequences={num_return_sequences} exceeds the {num_candidates} candidates generated per "
            "question (n_docs * num_beams); raise num_beams"
        )
    return num_return_sequences


def doc_titles(retriever: Any, doc_ids: Any) -> Optional[list]:
    """Titles of the passages `doc_ids` ((rows, n_docs) numpy ints), None where a slot is empty (-1).

    Returns None when there is no retriever (contexts were given) or no ids.
    """
    if retriever is None or doc_ids is None:
        return None
    import numpy as np

    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    dicts = retriever.index.get_doc_dicts(doc_ids)
    return [
        [title if doc_id >= 0 else None for doc_id, title in zip(row_ids, doc_dict["title"])]
        for row_ids, doc_dict in zip(doc_ids.tolist(), dicts)
    ]

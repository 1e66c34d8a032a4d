"""Argument resolution and input checks shared by `rag_pt` and `rag_tf`.

Everything here works on plain Python ints and shape tuples, so each framework calls the same
checks (in TF at trace time, where shapes are static) and users get the same error messages from
both. Tensors never enter this module.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from .errors import ContextInputError, RagInputError, RetrievalInputError  # noqa: F401 (re-exported)


def resolve(value: Any, default: Any) -> Any:
    """`value` unless it is None (never `value or default`: False and 0 are real values)."""
    return default if value is None else value


def resolve_n_docs(n_docs: Optional[int], config_n_docs: int) -> int:
    n_docs = resolve(n_docs, config_n_docs)
    if isinstance(n_docs, bool) or not isinstance(n_docs, numbers.Integral) or n_docs < 1:
        raise RagInputError(f"n_docs must be a positive integer, got {n_docs!r}")
    return int(n_docs)


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


# === Model inputs: shapes and dtypes ===
# Each framework describes its tensors as `TensorInfo` (static shape, None for an unknown dimension
# or rank; dtype name as a string: "int64", "float32", "bool", ...) and calls the checks below at
# the top of `forward` / `call` / `generate`, so bad input fails before any tensor op runs, with the
# same message in both frameworks (in TensorFlow at trace time, where shapes are static).
class TensorInfo(NamedTuple):
    shape: Optional[tuple]  # None: unknown rank
    dtype: str


# What each tensor argument of a RAG forward pass is: its expected layout and dtype kind.
_LAYOUTS = {
    "input_ids": ("(batch_size, question_length)", "ids"),
    "attention_mask": ("(batch_size, question_length)", "mask"),
    "decoder_input_ids": ("(batch_size, target_length)", "ids"),
    "decoder_attention_mask": ("(batch_size, target_length)", "mask"),
    "labels": ("(batch_size, target_length)", "ids"),
    "context_input_ids": ("(batch_size * n_docs, context_length)", "ids"),
    "context_attention_mask": ("(batch_size * n_docs, context_length)", "mask"),
    "doc_scores": ("(batch_size, n_docs)", "scores"),
}
_KIND_NAMES = {"ids": "integer token ids", "mask": "a 0/1 mask (integer, bool or float)", "scores": "float scores"}
# Which argument's shape each mask must equal.
_MASK_OF = {
    "attention_mask": "input_ids",
    "decoder_attention_mask": "decoder_input_ids",
    "context_attention_mask": "context_input_ids",
}
# The arguments whose first dimension counts questions, in the order that decides the reference.
_PER_QUESTION = ("input_ids", "doc_scores", "decoder_input_ids", "labels")


def dtype_kind(name: str) -> str:
    """"int", "float", "bool" or "other" for a dtype name of numpy, torch or TensorFlow."""
    name = str(name).rsplit(".", 1)[-1]  # "torch.int64" -> "int64"
    if re.fullmatch(r"u?int\d+", name):
        return "int"
    if name.startswith(("float", "bfloat")) or name in ("half", "double"):
        return "float"
    if name == "bool":
        return "bool"
    return "other"


def _dtype_allowed(kind: str, dtype: str) -> bool:
    found = dtype_kind(dtype)
    if kind == "ids":
        return found == "int"
    if kind == "scores":
        return found == "float"
    return found in ("int", "bool", "float")


def _shape_text(shape: Sequence[Optional[int]]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def check_tensor_inputs(
    inputs: Mapping[str, Optional[TensorInfo]],
    *,
    generator_positions: Optional[int] = None,
    question_positions: Optional[int] = None,
) -> None:
    """Rank, dtype, non-empty dimensions and agreement of the tensor arguments of a forward pass.

    `inputs` maps argument names (those of `_LAYOUTS`) to their `TensorInfo`, None when not given.
    Checks: every tensor is 2-D with no empty dimension; ids are integers, scores floats; each mask
    has the shape of its ids; `input_ids`, `doc_scores`, `decoder_input_ids` and `labels` agree on
    the batch size; `labels` and `decoder_input_ids` on the length; ids fit the positions of the
    model that reads them (`generator_positions` for contexts and targets, `question_positions` for
    questions; None: no limit, as T5's relative positions). `context_input_ids` rows against
    `doc_scores` and `n_docs` are `check_context_inputs`' job.
    """
    given = {name: info for name, info in inputs.items() if info is not None}
    for name, info in given.items():
        layout, kind = _LAYOUTS[name]
        if info.shape is not None:
            if len(info.shape) != 2:
                raise RagInputError(
                    f"`{name}` must have shape {layout}, got rank {len(info.shape)} shape {_shape_text(info.shape)}"
                )
            if 0 in info.shape:
                raise RagInputError(
                    f"`{name}` has an empty dimension, shape {_shape_text(info.shape)}; expected {layout} with "
                    "every dimension at least 1"
                )
        if not _dtype_allowed(kind, info.dtype):
            raise RagInputError(f"`{name}` must hold {_KIND_NAMES[kind]}, got dtype {info.dtype}")
    for mask, ids in _MASK_OF.items():
        if mask in given and ids in given:
            _check_same_shape(mask, given[mask].shape, ids, given[ids].shape)
    reference = None
    for name in _PER_QUESTION:
        rows = _dim(given[name].shape, 0) if name in given else None
        if rows is None:
            continue
        if reference is None:
            reference = (name, rows)
        elif rows != reference[1]:
            raise RagInputError(
                f"`{name}` has {rows} rows but `{reference[0]}` has {reference[1]}: expected one row per "
                f"question, {reference[1]}"
            )
    if "labels" in given and "decoder_input_ids" in given:
        labels_length = _dim(given["labels"].shape, 1)
        decoder_length = _dim(given["decoder_input_ids"].shape, 1)
        if labels_length is not None and decoder_length is not None and labels_length != decoder_length:
            raise RagInputError(
                f"`labels` are {labels_length} tokens long but `decoder_input_ids` {decoder_length}: the loss "
                "scores the decoder's output at each label position, so both must have the same length "
                "(or pass labels alone)"
            )
    limits = (
        ("input_ids", question_positions, "question encoder"),
        ("decoder_input_ids", generator_positions, "generator"),
        ("labels", generator_positions, "generator"),
        ("context_input_ids", generator_positions, "generator"),
    )
    for name, limit, model in limits:
        length = _dim(given[name].shape, 1) if name in given else None
        if limit is not None and length is not None and length > limit:
            raise RagInputError(
                f"`{name}` are {length} tokens long but the {model} handles at most {limit} positions; "
                "truncate them"
            )


def _check_same_shape(name: str, shape, other: str, other_shape) -> None:
    if shape is None or other_shape is None or len(shape) != len(other_shape):
        return
    for a, b in zip(shape, other_shape):
        if a is not None and b is not None and a != b:
            raise RagInputError(
                f"`{name}` has shape {_shape_text(shape)} but `{other}` has shape {_shape_text(other_shape)}; "
                "they must be equal"
            )


def question_encoder_max_positions(question_encoder_config: Any) -> Optional[int]:
    """Longest question the encoder can take (BERT / DPR learned positions); None when unknown."""
    return getattr(question_encoder_config, "max_position_embeddings", None)


# === Generation options ===
def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise RagInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False) -> float:
    """A finite real number in the range (`low` excluded when `low_open`, `high` included when finite)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bounds = ("(" if low_open or low == -math.inf else "[") + f"{low}, {high}" + ("]" if math.isfinite(high) else ")")
        raise RagInputError(f"{name} must be a finite number in {bounds}, got {value!r}")
    return float(value)


GENERATE_OPTIONS = (
    "num_beams", "num_return_sequences", "max_length", "max_new_tokens", "min_length", "min_new_tokens",
    "no_repeat_ngram_size", "top_k", "top_p", "temperature", "do_sample", "repetition_penalty",
    "length_penalty", "early_stopping",
)  # fmt: skip


def check_generate_options(
    generation_config: Any,
    kwargs: Mapping[str, Any],
    *,
    max_positions: Optional[int] = None,
    beams_bound_return_sequences: bool = True,
    **explicit: Any,
) -> None:
    """Types and ranges of the generation options of a `generate` call, and how they relate.

    Each option's value is the `explicit` argument's (e.g. RAG-Sequence's `num_beams=`), else the
    call's keyword argument, else the generation config's; unset (None) options are skipped.
    Relations (`min_length <= max_length`, `num_return_sequences <= num_beams` unless sampling, the
    output length within the generator's `max_positions`) are checked when the call sets one of
    their options, so a checkpoint's own generation defaults never fail on their own.
    `beams_bound_return_sequences=False` for RAG-Sequence, which returns up to n_docs * num_beams
    candidates per question (`check_num_return_sequences`).
    """
    value = {name: getattr(generation_config, name, None) for name in GENERATE_OPTIONS}
    value.update({name: kwargs[name] for name in GENERATE_OPTIONS if name in kwargs})
    value.update({name: v for name, v in explicit.items() if v is not None})
    given = {name for name in GENERATE_OPTIONS if name in kwargs or explicit.get(name) is not None}
    value = {name: v for name, v in value.items() if v is not None}
    for name in ("num_beams", "num_return_sequences", "max_new_tokens"):
        if name in value:
            _positive_int(name, value[name])
    if "max_length" in value:
        _positive_int("max_length", value["max_length"], 2)  # the decoder start token and one token
    for name in ("min_length", "min_new_tokens", "no_repeat_ngram_size", "top_k"):
        if name in value:
            _positive_int(name, value[name], 0)
    if "do_sample" in value and not isinstance(value["do_sample"], bool):
        raise RagInputError(f"do_sample must be True or False, got {value['do_sample']!r}")
    if "top_p" in value:
        _number("top_p", value["top_p"], 0.0, 1.0, low_open=True)
    if "temperature" in value and value.get("do_sample"):
        _number("temperature", value["temperature"], 0.0, low_open=True)
    if "repetition_penalty" in value:
        _number("repetition_penalty", value["repetition_penalty"], 0.0, low_open=True)
    if "length_penalty" in value:
        _number("length_penalty", value["length_penalty"], -math.inf)
    if "early_stopping" in value and value["early_stopping"] not in (True, False, "never"):
        raise RagInputError(f"early_stopping must be True, False or 'never', got {value['early_stopping']!r}")
    for low, high in (("min_length", "max_length"), ("min_new_tokens", "max_new_tokens")):
        if low in value and high in value and {low, high} & given and value[low] > value[high]:
            raise RagInputError(f"{low}={value[low]} exceeds {high}={value[high]}")
    beams, returned = value.get("num_beams", 1), value.get("num_return_sequences", 1)
    if (
        beams_bound_return_sequences
        and {"num_beams", "num_return_sequences"} & given
        and not value.get("do_sample")
        and returned > beams
    ):
        raise RagInputError(
            f"num_return_sequences={returned} exceeds num_beams={beams}: without sampling, generate returns at "
            "most num_beams sequences per question; raise num_beams"
        )
    if max_positions is not None and {"max_length", "max_new_tokens"} & given:
        length = 1 + value["max_new_tokens"] if "max_new_tokens" in value else value["max_length"]
        if length > max_positions:
            raise RagInputError(
                f"generating up to {length} tokens (max_length / max_new_tokens + the start token) exceeds the "
                f"{max_positions} positions of the generator; lower max_length or max_new_tokens"
            )


# === Retriever and context builder: question ids ===
def check_question_input_ids(question_input_ids: Any, vocab_size: Optional[int] = None) -> list:
    """Question ids as a list of rows of Python ints (rows may differ in length: they are decoded, not
    stacked), or a `ContextInputError` naming the problem. Accepts a 2-D integer numpy array or a
    list of lists of ints; with `vocab_size`, every id must lie in [0, vocab_size)."""
    if isinstance(question_input_ids, np.ndarray):
        if question_input_ids.ndim != 2:
            raise ContextInputError(
                f"question_input_ids must have shape (batch_size, length), got shape {question_input_ids.shape}"
            )
        if question_input_ids.size and not np.issubdtype(question_input_ids.dtype, np.integer):
            raise ContextInputError(f"question_input_ids must hold integer token ids, got dtype {question_input_ids.dtype}")
        ids = question_input_ids.astype(np.int64, copy=False)
        if vocab_size is not None and ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            row = int(np.flatnonzero(((ids < 0) | (ids >= vocab_size)).any(axis=1))[0])
            bad = ids[row][(ids[row] < 0) | (ids[row] >= vocab_size)][:5].tolist()
            raise ContextInputError(
                f"question_input_ids[{row}] holds ids {bad} outside the question encoder tokenizer's "
                f"vocabulary [0, {vocab_size})"
            )
        rows = ids.tolist()
        if not rows:
            raise ContextInputError("question_input_ids holds no questions (batch_size 0)")
        return rows
    elif isinstance(question_input_ids, (list, tuple)):
        rows = []
        for i, row in enumerate(question_input_ids):
            if isinstance(row, np.ndarray):
                row = row.tolist()
            if not isinstance(row, (list, tuple)):
                raise ContextInputError(
                    f"question_input_ids[{i}] must be a list of token ids (one row per question), got "
                    f"{type(row).__name__}"
                )
            for token in row:
                if isinstance(token, (bool, np.bool_)) or not isinstance(token, numbers.Integral):
                    raise ContextInputError(
                        f"question_input_ids[{i}] must hold integer token ids, got {type(token).__name__} {token!r:.40}"
                    )
            rows.append([int(t) for t in row])
    else:
        raise ContextInputError(
            "question_input_ids must be a 2-D integer array or a list of lists of token ids, got "
            f"{type(question_input_ids).__name__}"
        )
    if not rows:
        raise ContextInputError("question_input_ids holds no questions (batch_size 0)")
    if vocab_size is not None:
        for i, row in enumerate(rows):
            bad = [t for t in row if not 0 <= t < vocab_size]
            if bad:
                raise ContextInputError(
                    f"question_input_ids[{i}] holds ids {bad[:5]} outside the question encoder tokenizer's "
                    f"vocabulary [0, {vocab_size})"
                )
    return rows


# === Index builder settings ===
def check_index_build_settings(
    *,
    hnsw_m: Any = 32,
    ef_construction: Any = 200,
    ivf_nlist: Any = None,
    pq_m: Any = None,
    rerank_k_factor: Any = None,
    words_per_passage: Any = 100,
    batch_size: Any = 32,
    max_length: Any = 512,
) -> None:
    """Integer settings of `build_index` (and `python -m rag_core.build_index`), checked before any work.

    faiss does not check them itself: an HNSW graph with fewer than 2 links per node crashes the
    process (`hnsw_m` 1 segfaults, 0 aborts, a negative value never returns)."""
    _positive_int("hnsw_m", hnsw_m, 2)
    for name, value in (
        ("ef_construction", ef_construction),
        ("words_per_passage", words_per_passage),
        ("batch_size", batch_size),
        ("max_length", max_length),
    ):
        _positive_int(name, value)
    for name, value in (("ivf_nlist", ivf_nlist), ("pq_m", pq_m), ("rerank_k_factor", rerank_k_factor)):
        if value is not None:
            _positive_int(name, value)


# === Retriever call options ===
RETURN_TENSORS = (None, "np", "pt", "tf")


def check_retriever_options(*, prefix: Any = None, return_tensors: Any = None, error: type = RetrievalInputError) -> None:
    """`prefix` (a string prepended to every context, or None) and `return_tensors` of a retriever or
    context-builder call; `error` is the class raised."""
    if prefix is not None and not isinstance(prefix, str):
        raise error(f"prefix must be a string or None, got {type(prefix).__name__} {prefix!r:.40}")
    if not isinstance(return_tensors, (str, type(None))) or return_tensors not in RETURN_TENSORS:
        raise error(f"return_tensors must be one of {RETURN_TENSORS}, got {return_tensors!r}")


def check_shards(shards: Any, num_passages: Optional[int] = None) -> int:
    """`shards` as an int, or a ValueError naming the problem (at least 1, at most one per passage)."""
    if isinstance(shards, (bool, np.bool_)) or not isinstance(shards, (int, np.integer)):
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    if num_passages is not None and shards > num_passages:
        raise ValueError(f"shards={shards} is more than the {num_passages} passages: every shard needs at least one passage")
    return int(shards)

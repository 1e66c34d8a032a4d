"""Property tests of the retriever's and the context builder's inputs: whatever arrives (random shapes
and dtypes, NaN / inf vectors, odd n_docs, empty or unicode passages, ids outside the vocabulary),
the answer is a library error (`RagError`) or a result of the documented shapes, never another
exception and never a wrongly shaped result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rag_core.errors import RagError
from tests.harness.configs import HIDDEN, QUESTION_VOCAB

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DTYPES = st.sampled_from([np.float32] * 4 + [np.float16, np.float64, np.int32, np.int64, np.bool_, np.complex64])
N_DOCS = st.one_of(
    st.integers(-2, 15),  # the index holds 12 passages: 13..15 leave slots empty
    st.sampled_from([None, 2.5, "3", True, np.int64(2), [3]]),
)


@st.composite
def question_vectors(draw, batch=None):
    """Mostly (batch, 16) arrays, sometimes another rank, size or dtype, or NaN / inf / huge values."""
    batch = draw(st.integers(0, 4)) if batch is None else batch
    rank = draw(st.sampled_from([2] * 6 + [1, 3]))
    dim = draw(st.sampled_from([HIDDEN] * 6 + [HIDDEN - 1, HIDDEN + 1]))
    shape = {1: (dim,), 2: (batch, dim), 3: (batch, 1, dim)}[rank]
    dtype = draw(DTYPES)
    elements = None
    if np.issubdtype(dtype, np.floating):
        width = np.dtype(dtype).itemsize * 8
        elements = draw(st.sampled_from([st.floats(-10, 10, width=width)] * 3 + [
            st.floats(allow_nan=True, allow_infinity=True, width=width),
        ]))
    elif np.issubdtype(dtype, np.complexfloating):
        elements = st.complex_numbers(max_magnitude=10, width=64)
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _check_retrieved(result, batch, n_docs):
    embeds, doc_ids, dicts = result
    assert embeds.shape == (batch, n_docs, HIDDEN) and embeds.dtype == np.float32
    assert doc_ids.shape == (batch, n_docs) and doc_ids.dtype == np.int64
    assert len(dicts) == batch and all(len(d["title"]) == n_docs for d in dicts)
    assert np.isfinite(embeds).all()


@SETTINGS
@given(vectors=question_vectors(), n_docs=N_DOCS, ragged=st.sampled_from([False] * 4 + [True]))
def test_retrieve_raises_a_library_error_or_returns_the_documented_shapes(tiny_retriever_bart, vectors, n_docs, ragged):
    value = vectors.tolist() if ragged else vectors
    if ragged and vectors.ndim == 2 and len(vectors):
        value = [row[: 1 + i % HIDDEN] for i, row in enumerate(value)]  # rows of different lengths
    try:
        result = tiny_retriever_bart.retrieve(value, n_docs)
    except RagError as err:
        event(f"refused: {type(err).__name__} {str(err)[:30]}")
        return
    event("accepted")
    _check_retrieved(result, len(vectors), int(n_docs))


@st.composite
def question_ids(draw, batch=None):
    """Question ids as an integer array or nested lists; sometimes floats, out-of-vocabulary or negative ids."""
    batch = draw(st.integers(0, 3)) if batch is None else batch
    in_vocabulary = draw(st.sampled_from([True, True, False]))
    ids = st.integers(0, QUESTION_VOCAB - 1) if in_vocabulary else st.integers(-3, QUESTION_VOCAB + 3)
    rows = draw(st.lists(st.lists(ids, min_size=1, max_size=6), min_size=batch, max_size=batch))
    form = draw(st.sampled_from(["lists", "array", "array", "float-array", "ragged"]))
    if form == "lists" or not rows:
        return rows
    if form == "ragged":
        return [row[: 1 + i] for i, row in enumerate(rows)]
    width = min(len(r) for r in rows)
    array = np.array([r[:width] for r in rows], dtype=np.int64)
    return array.astype(np.float32) if form == "float-array" else array


@st.composite
def ids_and_vectors(draw):
    """Question ids and vectors, usually for the same batch."""
    batch = draw(st.integers(0, 3))
    other = draw(st.sampled_from([batch] * 4 + [batch + 1]))
    return draw(question_ids(batch)), draw(question_vectors(other))


@SETTINGS
@given(data=ids_and_vectors(), n_docs=N_DOCS)
def test_retriever_call_raises_a_library_error_or_returns_the_documented_shapes(tiny_retriever_bart, data, n_docs):
    ids, vectors = data
    try:
        out = tiny_retriever_bart(ids, vectors, n_docs=n_docs, return_tensors="np")
    except RagError as err:
        event(f"refused: {type(err).__name__} {str(err)[:30]}")
        return
    event("accepted")
    batch, n = len(vectors), int(n_docs if n_docs is not None else tiny_retriever_bart.n_docs)
    assert out["doc_ids"].shape == (batch, n) and out["retrieved_doc_embeds"].shape == (batch, n, HIDDEN)
    assert out["context_input_ids"].shape[0] == batch * n
    assert out["context_attention_mask"].shape == out["context_input_ids"].shape
    assert out["context_input_ids"].dtype == np.int64


TEXT = st.text(max_size=30)  # unicode, empty strings, whitespace-only, control characters
PASSAGE = st.one_of(
    TEXT,
    st.tuples(TEXT, TEXT),
    st.fixed_dictionaries({"title": TEXT, "text": TEXT}),
    st.sampled_from([None, 3, ("only title",), {"title": "no text"}, ("title", None)]),
)
VALID_PASSAGE = st.one_of(TEXT, st.tuples(TEXT, TEXT), st.fixed_dictionaries({"title": TEXT, "text": TEXT}))


@st.composite
def passages_and_scores(draw):
    batch = draw(st.integers(1, 3))
    n_docs = draw(st.integers(0, 3))
    passage = draw(st.sampled_from([VALID_PASSAGE, VALID_PASSAGE, PASSAGE]))
    passages = [draw(st.lists(passage, min_size=n_docs, max_size=n_docs)) for _ in range(batch)]
    if draw(st.integers(0, 5)) == 0 and batch > 1:  # one question with a different number of passages
        passages[-1] = passages[-1] + [draw(TEXT)]
    scores = draw(st.one_of(
        st.none(),
        hnp.arrays(np.float32, (batch, n_docs), elements=st.floats(-5, 5, width=32)),
        hnp.arrays(np.float64, (batch, n_docs), elements=st.floats(allow_nan=True, allow_infinity=True)),
        hnp.arrays(np.float32, (batch, max(n_docs, 1) + 1), elements=st.floats(-5, 5, width=32)),
    ))
    return passages, scores


@SETTINGS
@given(data=passages_and_scores(), prefix=st.one_of(st.none(), TEXT), draw=st.data())
def test_contexts_from_passages_raises_a_library_error_or_returns_the_documented_shapes(
    tiny_retriever_bart, data, prefix, draw
):
    passages, doc_scores = data
    ids = draw.draw(question_ids(draw.draw(st.sampled_from([len(passages)] * 3 + [len(passages) + 1]))))
    try:
        out = tiny_retriever_bart.contexts_from_passages(ids, passages, doc_scores=doc_scores, prefix=prefix,
                                                        return_tensors="np")
    except RagError as err:
        event(f"refused: {type(err).__name__} {str(err)[:30]}")
        return
    event("accepted")
    batch, n_docs = len(passages), len(passages[0])
    assert out["doc_scores"].shape == (batch, n_docs) and np.isfinite(out["doc_scores"]).all()
    assert out["context_input_ids"].shape[0] == batch * n_docs
    assert out["context_attention_mask"].shape == out["context_input_ids"].shape
    assert out["context_attention_mask"].sum(axis=1).min() >= 1  # no context is empty


def test_the_property_strategies_reach_both_outcomes(tiny_retriever_bart):
    """The strategies above are not all-invalid: a valid draw of each kind succeeds."""
    vectors = np.zeros((2, HIDDEN), np.float32)
    _check_retrieved(tiny_retriever_bart.retrieve(vectors, 13), 2, 13)
    out = tiny_retriever_bart.contexts_from_passages([[101, 102], [101, 102]], [[("ü", "")], [""]], prefix="")
    assert np.asarray(out["context_input_ids"]).shape[0] == 2
    with pytest.raises(RagError):
        tiny_retriever_bart.retrieve(vectors[:, :-1], 2)

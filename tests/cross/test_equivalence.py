"""rag_pt and rag_tf on the same (converted) weights give the same numbers and the same ids.

Each pair is our PyTorch model with random (sharpened) weights, saved, converted with
`rag_core.convert` and loaded into the TF twin. Bounds come from `tests/cross/tolerances.py`.
Batch 2 everywhere; `n_docs` 3 from the config, overridden to 2 where marked.
"""

from __future__ import annotations

import pytest

from tests.cross import support
from tests.cross.support import numpy, to_pt, to_tf
from tests.cross.tolerances import assert_close

COMBOS = [("dpr", "bart"), ("dpr", "t5"), ("bert", "bart")]
GENERATION_COMBOS = [("dpr", "bart"), ("dpr", "t5")]


@pytest.fixture(scope="module")
def passages_dir(tmp_path_factory):
    from tests.harness.retrieval import write_tiny_passages

    return write_tiny_passages(tmp_path_factory.mktemp("kb"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, passages_dir):
    """Built on first use and shared by the module: (head, question_encoder, generator) -> (pt, tf)."""
    cache = {}

    def get(head, question_encoder, generator):
        key = (head, question_encoder, generator)
        if key not in cache:
            folder = tmp_path_factory.mktemp("-".join(key))
            pt_model, tf_model, _, _ = support.build_pair(folder, head, question_encoder, generator, passages_dir)
            cache[key] = (pt_model, tf_model)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def retrievers(question_encoder_tokenizer, generator_tokenizers):
    cache = {}

    def get(config):
        from tests.harness.retrieval import make_tiny_retriever

        key = config.generator.model_type
        if key not in cache:
            cache[key] = make_tiny_retriever(config, question_encoder_tokenizer, generator_tokenizers[key])
        return cache[key]

    return get


def _run_both(pt_model, tf_model, inputs, **options):
    import torch

    with torch.no_grad():
        pt_out = pt_model(**to_pt(inputs), **options)
    tf_out = tf_model(**to_tf(inputs), **options, training=False)
    return pt_out, tf_out


def _compare_outputs(pt_out, tf_out, what, loss=True):
    assert_close("doc_scores", numpy(tf_out.doc_scores), numpy(pt_out.doc_scores), what)
    assert_close("logits", numpy(tf_out.logits), numpy(pt_out.logits), what)
    if loss:
        assert pt_out.loss is not None and tf_out.loss is not None, what
        assert_close("loss", numpy(tf_out.loss), numpy(pt_out.loss), what)


def _inputs(head, generator_tokenizer, **kwargs):
    labels = support.labels(generator_tokenizer)
    return dict(kwargs, **({"decoder_input_ids": labels} if head == "model" else {"labels": labels}))


@pytest.mark.parametrize("question_encoder,generator", COMBOS)
@pytest.mark.parametrize("head", list(support.HEADS))
def test_forward_with_precomputed_context(pairs, generator_tokenizers, head, question_encoder, generator):
    pt_model, tf_model = pairs(head, question_encoder, generator)
    tokenizer = generator_tokenizers[generator]
    for n_docs in (3, 2):  # the config's, then overridden
        context = support.contexts(tokenizer, batch_size=2, n_docs=n_docs)
        options = {} if n_docs == 3 else {"n_docs": n_docs}
        pt_out, tf_out = _run_both(pt_model, tf_model, _inputs(head, tokenizer, **context), **options)
        _compare_outputs(pt_out, tf_out, f"{head} {generator} n_docs={n_docs}", loss=head != "model")


@pytest.mark.parametrize("question_encoder,generator", COMBOS)
@pytest.mark.parametrize("head", list(support.HEADS))
def test_forward_with_retriever(
    pairs, retrievers, question_encoder_tokenizer, generator_tokenizers, head, question_encoder, generator
):
    pt_model, tf_model = pairs(head, question_encoder, generator)
    retriever = retrievers(pt_model.config)
    pt_model.set_retriever(retriever)
    tf_model.set_retriever(retriever)
    tokenizer = generator_tokenizers[generator]
    for options in ({}, {"n_docs": 2}):
        inputs = _inputs(head, tokenizer, **support.questions(question_encoder_tokenizer))
        pt_out, tf_out = _run_both(pt_model, tf_model, inputs, output_retrieved=True, **options)
        what = f"{head} {question_encoder}-{generator} retriever {options}"
        # the same passages were retrieved, in the same order
        assert_close("generated_ids", numpy(tf_out.retrieved_doc_ids), numpy(pt_out.retrieved_doc_ids), what)
        assert_close("generated_ids", numpy(tf_out.context_input_ids), numpy(pt_out.context_input_ids), what)
        _compare_outputs(pt_out, tf_out, what, loss=head != "model")


@pytest.mark.parametrize("exclude_bos_score", [False, True])
@pytest.mark.parametrize("generator", ["bart", "t5"])
@pytest.mark.parametrize("head", ["sequence", "token"])
def test_losses_with_every_option(pairs, generator_tokenizers, head, generator, exclude_bos_score):
    """label_smoothing 0 and 0.1 x reduce_loss False/True; exclude_bos_score passed only when True
    (so a missing argument fails only its own case)."""
    pt_model, tf_model = pairs(head, "dpr", generator)
    tokenizer = generator_tokenizers[generator]
    inputs = _inputs(head, tokenizer, **support.contexts(tokenizer, batch_size=2, n_docs=3, seed=1))
    options = {"exclude_bos_score": True} if exclude_bos_score else {}
    try:
        for smoothing in (0.0, 0.1):
            pt_model.config.label_smoothing = tf_model.config.label_smoothing = smoothing
            for reduce_loss in (False, True):
                pt_out, tf_out = _run_both(pt_model, tf_model, inputs, reduce_loss=reduce_loss, **options)
                what = f"{head} {generator} eps={smoothing} reduce={reduce_loss} {options}"
                assert numpy(pt_out.loss).shape == (() if reduce_loss else (2,)), what
                assert_close("loss", numpy(tf_out.loss), numpy(pt_out.loss), what)
    finally:
        pt_model.config.label_smoothing = tf_model.config.label_smoothing = 0.0


GENERATE_OPTIONS = [
    pytest.param({"num_beams": 1}, id="greedy"),
    pytest.param({"num_beams": 4}, id="beam4"),
    pytest.param({"num_beams": 4, "num_return_sequences": 2}, id="beam4-return2"),
]


def _generate_both(pt_model, tf_model, inputs, **options):
    import torch

    with torch.no_grad():
        pt_ids = pt_model.generate(**to_pt(inputs), **options)
    tf_ids = tf_model.generate(**to_tf(inputs), **options)
    return numpy(pt_ids), numpy(tf_ids)


@pytest.mark.parametrize("options", GENERATE_OPTIONS)
@pytest.mark.parametrize("question_encoder,generator", GENERATION_COMBOS)
@pytest.mark.parametrize("head", ["sequence", "token"])
def test_generate_with_precomputed_context(pairs, generator_tokenizers, head, question_encoder, generator, options):
    pt_model, tf_model = pairs(head, question_encoder, generator)
    context = support.contexts(generator_tokenizers[generator], batch_size=2, n_docs=3, seed=2)
    pt_ids, tf_ids = _generate_both(pt_model, tf_model, context, max_length=8, **options)
    assert pt_ids.shape[0] == 2 * options.get("num_return_sequences", 1)
    assert_close("generated_ids", tf_ids, pt_ids, f"{head} {generator} {options}")


@pytest.mark.parametrize("question_encoder,generator", GENERATION_COMBOS)
@pytest.mark.parametrize("head", ["sequence", "token"])
def test_generate_with_retriever_and_n_docs_override(
    pairs, retrievers, question_encoder_tokenizer, head, question_encoder, generator
):
    pt_model, tf_model = pairs(head, question_encoder, generator)
    retriever = retrievers(pt_model.config)
    pt_model.set_retriever(retriever)
    tf_model.set_retriever(retriever)
    inputs = support.questions(question_encoder_tokenizer)
    # one decoding mode per head keeps the suite short (each new mode is a new TF trace); both
    # modes are covered with precomputed context above
    options = {"num_beams": 4, "num_return_sequences": 2} if head == "token" else {"num_beams": 1}
    pt_ids, tf_ids = _generate_both(pt_model, tf_model, inputs, max_length=8, n_docs=2, **options)
    assert_close("generated_ids", tf_ids, pt_ids, f"{head} {generator} retriever n_docs=2 {options}")


@pytest.mark.parametrize("head", ["token", "sequence"])
def test_a_given_context_is_used_even_with_a_retriever_in_both(
    pairs, retrievers, question_encoder_tokenizer, generator_tokenizers, head
):
    """With a retriever set, a given `context_input_ids` is read (never silently re-retrieved): without
    a mask the mask comes from the pad id, and without `doc_scores` both frameworks raise."""
    from rag_core.arguments import RagInputError

    pt_model, tf_model = pairs(head, "dpr", "bart")
    retriever = retrievers(pt_model.config)
    pt_model.set_retriever(retriever)
    tf_model.set_retriever(retriever)
    tokenizer = generator_tokenizers["bart"]
    context = support.contexts(tokenizer, batch_size=2, n_docs=3)
    with_mask = _inputs(head, tokenizer, **support.questions(question_encoder_tokenizer), **context)
    without_mask = {k: v for k, v in with_mask.items() if k != "context_attention_mask"}
    pt_ref, tf_ref = _run_both(pt_model, tf_model, with_mask)
    pt_out, tf_out = _run_both(pt_model, tf_model, without_mask)
    _compare_outputs(pt_out, tf_out, f"{head} no mask")
    assert_close("logits", numpy(tf_out.logits), numpy(tf_ref.logits), f"{head} TF mask derived")
    assert_close("logits", numpy(pt_out.logits), numpy(pt_ref.logits), f"{head} PT mask derived")
    assert_close("doc_scores", numpy(tf_out.doc_scores), context["doc_scores"], f"{head} TF kept the given scores")
    no_scores = {k: v for k, v in with_mask.items() if k != "doc_scores"}
    with pytest.raises(RagInputError, match="doc_scores"):
        pt_model(**to_pt(no_scores))
    with pytest.raises(RagInputError, match="doc_scores"):
        tf_model(**to_tf(no_scores), training=False)

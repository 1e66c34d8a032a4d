"""Generation agrees across frameworks in its scores, not only its ids, on unsharpened two-layer
generators (nearly flat next-token distributions), and against brute force.

RAG-Sequence: "thorough" and "fast" x greedy and beam search, with label smoothing; the expected
candidates come from the PyTorch generator's own `generate`, their scores from the model's forward
pass (`-loss` with `labels`, thorough) or a teacher-forced pass per producing passage (fast), never
from the code under test (`tests.pt.support.rag_sequence_brute_force`). RAG-Token: ids, beam scores and per-step scores. Also: rescoring in
chunks equals rescoring at once, and empty retrieval slots (an index smaller than `n_docs`) in
forward and generate. Bounds come from `tests/cross/tolerances.py`.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.cross import support
from tests.cross.support import numpy, to_pt, to_tf
from tests.cross.tolerances import TOLERANCES, assert_close
from tests.pt.support import check_ranking, rag_sequence_brute_force

MAX_LENGTH = 8


@pytest.fixture(scope="module")
def passages_dir(tmp_path_factory):
    from tests.harness.retrieval import write_tiny_passages

    return write_tiny_passages(tmp_path_factory.mktemp("kb"))


@pytest.fixture(scope="module")
def flat_pairs(tmp_path_factory, passages_dir):
    """(head, generator) -> (pt, tf): dpr question encoder, unsharpened two-layer generator, shared by
    the module; forced EOS off so a beam cut at `max_length` keeps its raw log-probabilities."""
    cache = {}

    def get(head, generator):
        if (head, generator) not in cache:
            folder = tmp_path_factory.mktemp(f"{head}-{generator}")
            pt_model, tf_model, _, _ = support.build_pair(folder, head, "dpr", generator, passages_dir,
                                                          sharpened=False, layers=2)
            for model in (pt_model, tf_model):
                model.generator.generation_config.forced_eos_token_id = None
            cache[head, generator] = (pt_model, tf_model)
        return cache[head, generator]

    return get


SEQUENCE_MODES = [
    pytest.param("thorough", 1, id="thorough-greedy"),
    pytest.param("thorough", 3, id="thorough-beam3"),
    pytest.param("fast", 1, id="fast-greedy"),
    pytest.param("fast", 3, id="fast-beam3"),
]


@pytest.mark.parametrize("rescore,num_beams", SEQUENCE_MODES)
def test_rag_sequence_generate_ids_and_scores(flat_pairs, generator_tokenizers, rescore, num_beams):
    """Same candidates and scores in both frameworks and as brute force; label smoothing 0.1 changes
    the thorough scores (the loss's smoothing term) in both alike."""
    pt_model, tf_model = flat_pairs("sequence", "bart")
    context = support.contexts(generator_tokenizers["bart"], batch_size=2, n_docs=3, seed=3)
    returned = min(2, num_beams * 3)
    options = dict(num_beams=num_beams, num_return_sequences=returned, rescore=rescore, max_length=MAX_LENGTH,
                   output_provenance=True)
    import torch

    try:
        pt_model.config.label_smoothing = tf_model.config.label_smoothing = 0.1
        expected = rag_sequence_brute_force(pt_model, context, rescore, num_beams, MAX_LENGTH)
        with torch.no_grad():
            pt_out = pt_model.generate(**to_pt(context), **options)
        tf_out = tf_model.generate(**to_tf(context), **options)
    finally:
        pt_model.config.label_smoothing = tf_model.config.label_smoothing = 0.0
    what = f"{rescore} beams={num_beams}"
    assert_close("generated_ids", numpy(tf_out.sequences), numpy(pt_out.sequences), what)
    assert_close("sequences_scores", numpy(tf_out.sequences_scores), numpy(pt_out.sequences_scores), what)
    tol, pad = TOLERANCES["sequences_scores"], pt_model.config.generator.pad_token_id
    for name, out in (("PT", pt_out), ("TF", tf_out)):
        check_ranking(expected, numpy(out.sequences), numpy(out.sequences_scores), returned, pad, rtol=tol.rtol,
                      atol=tol.atol, what=f"{name} {what} vs brute force, question")


@pytest.mark.parametrize("num_beams", [1, 3])
def test_rag_token_generate_ids_and_scores(flat_pairs, generator_tokenizers, num_beams):
    pt_model, tf_model = flat_pairs("token", "bart")
    context = support.contexts(generator_tokenizers["bart"], batch_size=2, n_docs=3, seed=3)
    # min_length: the flat generator would otherwise end at once (EOS first); its processor bans EOS
    options = dict(num_beams=num_beams, min_length=5, max_length=MAX_LENGTH, return_dict_in_generate=True,
                   output_scores=True)
    import torch

    with torch.no_grad():
        pt_out = pt_model.generate(**to_pt(context), **options)
    tf_out = tf_model.generate(**to_tf(context), **options)
    what = f"token beams={num_beams}"
    assert_close("generated_ids", numpy(tf_out.sequences), numpy(pt_out.sequences), what)
    if num_beams > 1:
        assert_close("sequences_scores", numpy(tf_out.sequences_scores), numpy(pt_out.sequences_scores), what)
    assert len(tf_out.scores) == len(pt_out.scores) > 1, what
    for step, (tf_step, pt_step) in enumerate(zip(tf_out.scores, pt_out.scores)):
        assert_close("step_scores", numpy(tf_step), numpy(pt_step), f"{what} step {step}")


def test_thorough_rescoring_in_chunks_equals_all_at_once(flat_pairs, generator_tokenizers, monkeypatch):
    """A budget of one byte: one candidate per generator call, in both frameworks; same ids, same scores."""
    import torch

    import rag_pt.generation_utils
    import rag_tf.generation_utils
    from rag_core import generation

    pt_model, tf_model = flat_pairs("sequence", "bart")
    context = support.contexts(generator_tokenizers["bart"], batch_size=2, n_docs=3, seed=4)
    options = dict(num_beams=3, num_return_sequences=4, max_length=MAX_LENGTH, output_provenance=True)
    with torch.no_grad():
        pt_whole = pt_model.generate(**to_pt(context), **options)
    tf_whole = tf_model.generate(**to_tf(context), **options)

    chunks = []

    def recording(*args, **kwargs):
        chunks.append((args[0], generation.rescore_chunk_candidates(*args, **kwargs)))
        return chunks[-1][1]

    monkeypatch.setattr(generation, "RESCORE_CHUNK_BYTES", 1)
    for module in (rag_pt.generation_utils, rag_tf.generation_utils):
        monkeypatch.setattr(module, "rescore_chunk_candidates", recording)
    with torch.no_grad():
        pt_chunked = pt_model.generate(**to_pt(context), **options)
    tf_chunked = tf_model.generate(**to_tf(context), **options)
    assert chunks == [(3, 1), (3, 1)]  # one candidate (3 passages) per chunk, each framework once
    for name, whole, chunked in (("PT", pt_whole, pt_chunked), ("TF", tf_whole, tf_chunked)):
        assert_close("generated_ids", numpy(chunked.sequences), numpy(whole.sequences), name)
        assert_close("sequences_scores", numpy(chunked.sequences_scores), numpy(whole.sequences_scores), name)
    assert_close("sequences_scores", numpy(tf_chunked.sequences_scores), numpy(pt_chunked.sequences_scores))


@pytest.fixture(scope="module")
def short_index_retriever(tmp_path_factory, question_encoder_tokenizer, generator_tokenizers):
    """A real retriever over an index of 2 passages: with n_docs=3, faiss leaves the last slot empty (-1)."""
    from tests.harness.configs import tiny_rag_config
    from tests.harness.passages import PASSAGES
    from tests.harness.retrieval import make_tiny_retriever, tiny_embeddings, write_passages

    folder = tmp_path_factory.mktemp("short-kb")
    paths = write_passages(str(folder), PASSAGES[:2], tiny_embeddings()[:2])
    config = tiny_rag_config("dpr", "bart", **paths)
    return make_tiny_retriever(config, question_encoder_tokenizer, generator_tokenizers["bart"])


@pytest.mark.parametrize("head", ["sequence", "token"])
def test_empty_retrieval_slots_in_forward_and_generate(flat_pairs, short_index_retriever, question_encoder_tokenizer,
                                                       generator_tokenizers, head):
    """Both frameworks run the models (not only the losses) on the -1 slots a real index returns:
    the same passages, scores, logits and loss, and the same generated ids and scores."""
    import torch

    pt_model, tf_model = flat_pairs(head, "bart")
    questions = support.questions(question_encoder_tokenizer)
    inputs = dict(questions, labels=support.labels(generator_tokenizers["bart"]))
    try:
        pt_model.set_retriever(short_index_retriever)
        tf_model.set_retriever(short_index_retriever)
        with torch.no_grad():
            pt_out = pt_model(**to_pt(inputs), output_retrieved=True)
        tf_out = tf_model(**to_tf(inputs), output_retrieved=True, training=False)
        if head == "sequence":
            options = dict(num_beams=3, num_return_sequences=2, max_length=MAX_LENGTH, output_provenance=True)
        else:
            options = dict(num_beams=3, min_length=5, max_length=MAX_LENGTH, return_dict_in_generate=True,
                           output_scores=True)
        with torch.no_grad():
            pt_gen = pt_model.generate(**to_pt(questions), **options)
        tf_gen = tf_model.generate(**to_tf(questions), **options)
    finally:
        pt_model.set_retriever(None)
        tf_model.set_retriever(None)
    doc_ids = numpy(pt_out.retrieved_doc_ids)
    assert (doc_ids[:, -1] == -1).all() and (doc_ids[:, :-1] >= 0).all(), doc_ids
    assert_close("generated_ids", numpy(tf_out.retrieved_doc_ids), doc_ids, head)
    assert_close("doc_scores", numpy(tf_out.doc_scores), numpy(pt_out.doc_scores), head)
    assert_close("logits", numpy(tf_out.logits), numpy(pt_out.logits), head)
    assert_close("loss", numpy(tf_out.loss), numpy(pt_out.loss), head)
    assert np.isfinite(numpy(pt_out.loss)).all()
    assert_close("generated_ids", numpy(tf_gen.sequences), numpy(pt_gen.sequences), f"{head} generate")
    assert_close("sequences_scores", numpy(tf_gen.sequences_scores), numpy(pt_gen.sequences_scores), head)
    assert np.isfinite(numpy(pt_gen.sequences_scores)).all()
    if head == "sequence":
        assert_close("generated_ids", np.asarray(tf_gen.doc_ids), numpy(pt_gen.doc_ids), "provenance")

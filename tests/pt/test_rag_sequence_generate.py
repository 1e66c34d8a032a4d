"""RAG-Sequence `generate`: batched, deduplicated, rescored against the passages already retrieved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag_core import RetrievAugGenerateOutput
from rag_core.arguments import RagInputError
from tests.pt import support

MODES = [dict(), dict(num_beams=4), dict(num_beams=4, num_return_sequences=2), dict(num_beams=3, min_length=5, max_length=12)]


@pytest.mark.parametrize("generator", ["bart", "t5"])
def test_generate_with_retriever_matches_oracle(pair, questions, generator):
    """Same ids as the oracle's per-example loop (which re-retrieves with config.n_docs to rescore:
    the same passages here, since n_docs is the config's)."""
    ours, oracle, _ = pair("sequence", "dpr", generator)
    ids, mask = questions
    for kwargs in MODES:
        mine = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
        theirs = oracle.generate(input_ids=ids, attention_mask=mask, **kwargs)
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=str(kwargs))


def test_generate_with_context_matches_oracle(pair, generator_tokenizers):
    """Unpadded contexts: transformers 5's RAG-Sequence generates its candidates from given contexts
    without their attention mask (4.x inferred one from the pad id), so padding would change its
    candidates. That ours masks padding is tested by `test_batched_equals_one_question_at_a_time`."""
    ours, oracle, _ = pair("sequence", "bert", "bart", retriever=False)
    ctx = support.make_contexts(generator_tokenizers["bart"], batch_size=2, n_docs=3, length=14)
    for kwargs in MODES:
        mine = ours.generate(**ctx, **kwargs)
        np.testing.assert_array_equal(mine.numpy(), oracle.generate(**ctx, **kwargs).numpy(), err_msg=str(kwargs))


def test_n_docs_override_rescores_on_the_same_passages(pair, questions):
    """Defect 1 of the original: its rescoring re-retrieves with config.n_docs, whatever n_docs was asked.
    Ours rescores on the n_docs passages it generated from; equal to the oracle whose config says n_docs=2."""
    ours, oracle, _ = pair("sequence", "dpr", "bart")
    ids, mask = questions
    mine = ours.generate(input_ids=ids, attention_mask=mask, num_beams=3, n_docs=2)
    oracle.config.n_docs = 2
    try:
        theirs = oracle.generate(input_ids=ids, attention_mask=mask, num_beams=3, n_docs=2)
    finally:
        oracle.config.n_docs = 3
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_batched_equals_one_question_at_a_time(pair, questions):
    ours, _, _ = pair("sequence", "dpr", "t5")
    ids, mask = questions
    batched = ours.generate(input_ids=ids, attention_mask=mask, num_beams=3, num_return_sequences=2)
    for i in range(ids.shape[0]):
        single = ours.generate(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1], num_beams=3, num_return_sequences=2)
        width = single.shape[1]
        np.testing.assert_array_equal(batched[2 * i : 2 * i + 2, :width].numpy(), single.numpy())


def test_provenance_scores_are_the_marginal_likelihood(pair, questions, tiny_retriever):
    ours, _, config = pair("sequence", "dpr", "bart")
    ids, mask = questions
    out = ours.generate(input_ids=ids, attention_mask=mask, num_beams=2, num_return_sequences=2, output_provenance=True)
    assert isinstance(out, RetrievAugGenerateOutput) and out.sequences.shape[0] == 6
    # thorough score == -loss of forward(labels=candidate, exclude_bos_score=True)
    loss = ours(input_ids=ids.repeat_interleave(2, 0), attention_mask=mask.repeat_interleave(2, 0),
                labels=out.sequences, exclude_bos_score=True).loss
    np.testing.assert_allclose(out.sequences_scores.numpy(), -loss.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert (out.sequences_scores.view(3, 2)[:, 0] >= out.sequences_scores.view(3, 2)[:, 1]).all()
    titles = tiny_retriever("bart", "dpr").index.get_doc_dicts(out.doc_ids.numpy())
    assert out.doc_titles == [list(d["title"]) for d in titles]


@pytest.mark.parametrize("num_beams", [1, 2])
def test_fast_mode_against_brute_force(pair, generator_tokenizers, num_beams):
    """Independent of the implementation's formula: the generator's own candidates, each scored by a
    teacher-forced pass under every passage that produced it (beam search and greedy decoding, which
    keeps no scores)."""
    ours, _, config = pair("sequence", "dpr", "bart", retriever=False)
    ctx = support.make_contexts(generator_tokenizers["bart"], batch_size=2, n_docs=3)
    generation_config = ours.generator.generation_config
    forced_eos = generation_config.forced_eos_token_id
    generation_config.forced_eos_token_id = None  # a beam cut at max_length keeps its last token's log-prob
    try:
        expected = support.rag_sequence_brute_force(ours, ctx, "fast", num_beams, max_length=8)
        out = ours.generate(**ctx, num_beams=num_beams, num_return_sequences=2, rescore="fast",
                            output_provenance=True, max_length=8)
    finally:
        generation_config.forced_eos_token_id = forced_eos
    support.check_ranking(expected, out.sequences.numpy(), out.sequences_scores.numpy(), 2,
                          config.generator.pad_token_id, what=f"fast beams={num_beams} question")


def test_deduplication_by_token_ids(pair, generator_tokenizers):
    ours, _, _ = pair("sequence", "dpr", "bart", retriever=False)
    ctx = support.make_contexts(generator_tokenizers["bart"], batch_size=1, n_docs=3)
    ctx["context_input_ids"] = ctx["context_input_ids"][:1].repeat(3, 1)  # three identical passages
    ctx["context_attention_mask"] = ctx["context_attention_mask"][:1].repeat(3, 1)
    out = ours.generate(**ctx, num_beams=1, num_return_sequences=3, output_provenance=True)
    # one distinct candidate: the other two slots are padding with score -inf
    assert torch.isfinite(out.sequences_scores).tolist() == [True, False, False]
    both = ours.generate(**ctx, num_beams=1, num_return_sequences=3, do_deduplication=False)
    assert (both == both[0]).all()


def test_bad_generate_arguments(pair, generator_tokenizers):
    ours, _, _ = pair("sequence", "dpr", "bart", retriever=False)
    ctx = support.make_contexts(generator_tokenizers["bart"], batch_size=1, n_docs=3)
    with pytest.raises(RagInputError, match="rescore"):
        ours.generate(**ctx, rescore="slow")
    with pytest.raises(RagInputError, match="num_return_sequences"):
        ours.generate(**ctx, num_beams=1, num_return_sequences=4)
    with pytest.raises(RagInputError, match="doc_scores"):
        ours.generate(context_input_ids=ctx["context_input_ids"])

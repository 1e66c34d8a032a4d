"""RAG-Token `generate`: identical ids to the oracle, and GenerationMixin's features working through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag_core import RetrievAugGenerateOutput
from tests.pt import support

MODES = [dict(), dict(num_beams=4), dict(num_beams=4, num_return_sequences=2), dict(num_beams=3, min_length=6, max_length=12)]


@pytest.mark.parametrize("generator", ["bart", "t5"])
def test_generate_with_retriever_matches_oracle(pair, questions, generator):
    ours, oracle, _ = pair("token", "dpr", generator)
    ids, mask = questions
    for kwargs in MODES + [dict(num_beams=2, n_docs=2)]:
        mine = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
        theirs = oracle.generate(input_ids=ids, attention_mask=mask, **kwargs)
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=str(kwargs))


def test_generate_with_context_matches_oracle(pair, generator_tokenizers):
    ours, oracle, _ = pair("token", "bert", "bart", retriever=False)
    ctx = support.make_contexts(generator_tokenizers["bart"], batch_size=2, n_docs=3)
    for kwargs in MODES:
        mine = ours.generate(**ctx, **kwargs)
        np.testing.assert_array_equal(mine.numpy(), oracle.generate(**ctx, **kwargs).numpy(), err_msg=str(kwargs))


def test_cache_reorder_equals_no_cache(pair, questions):
    """Beam search with the decoder cache (reordered per passage) gives the ids of a cache-free search."""
    ours, _, _ = pair("token", "dpr", "bart")
    ids, mask = questions
    cached = ours.generate(input_ids=ids, attention_mask=mask, num_beams=4, max_length=10, min_length=6)
    fresh = ours.generate(input_ids=ids, attention_mask=mask, num_beams=4, max_length=10, min_length=6, use_cache=False)
    np.testing.assert_array_equal(cached.numpy(), fresh.numpy())


@pytest.mark.parametrize("generator", ["bart", "t5"])
def test_static_cache_gives_the_ids_of_the_dynamic_one(pair, questions, generator):
    """The cross-attention part of a static cache holds the context length L (GenerationMixin would
    size it from the `(B, N, L, H)` states' second dimension, N), greedy and with beams."""
    ours, _, _ = pair("token", "dpr", generator)
    ids, mask = questions
    for kwargs in (dict(max_length=9), dict(num_beams=3, max_length=9), dict(num_beams=2, max_new_tokens=5)):
        dynamic = ours.generate(input_ids=ids, attention_mask=mask, **kwargs)
        static = ours.generate(input_ids=ids, attention_mask=mask, cache_implementation="static", **kwargs)
        np.testing.assert_array_equal(static.numpy(), dynamic.numpy(), err_msg=str(kwargs))


def test_sampling_matches_oracle_with_same_seed(pair, questions):
    ours, oracle, _ = pair("token", "dpr", "bart")
    ids, mask = questions
    torch.manual_seed(11)
    mine = ours.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=20, max_length=8, min_length=8)
    torch.manual_seed(11)
    theirs = oracle.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=20, max_length=8, min_length=8)
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # several samples per question (the original's private loop refuses num_return_sequences without beams)
    many = ours.generate(input_ids=ids, attention_mask=mask, do_sample=True, num_return_sequences=3, max_length=6)
    assert many.shape[0] == 9


def test_logits_processors_and_lengths(pair, questions):
    ours, _, config = pair("token", "dpr", "bart")
    ids, mask = questions
    eos = config.generator.eos_token_id
    allowed = [5, 6, 7, 8, eos]
    out = ours.generate(input_ids=ids, attention_mask=mask, num_beams=2, max_length=9,
                        prefix_allowed_tokens_fn=lambda batch_id, sent: allowed)
    assert set(out[:, 1:].flatten().tolist()) <= set(allowed) | {config.generator.pad_token_id}
    out = ours.generate(input_ids=ids, attention_mask=mask, no_repeat_ngram_size=1, min_length=10, max_length=10)
    for row in out[:, 1:].tolist():
        assert len(row) == len(set(row)), row
    out = ours.generate(input_ids=ids, attention_mask=mask, min_length=7, max_length=7, forced_bos_token_id=0)
    assert out.shape[1] == 7 and (out[:, 1] == 0).all() and (out[:, -1] == eos).all()  # forced BOS and EOS
    out = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4)
    assert out.shape[1] == 5


def test_scores_and_return_dict(pair, questions):
    ours, _, config = pair("token", "dpr", "bart")
    ids, mask = questions
    out = ours.generate(input_ids=ids, attention_mask=mask, num_beams=2, max_length=6, min_length=6,
                        output_scores=True, return_dict_in_generate=True)
    assert out.sequences.shape == (3, 6)
    assert len(out.scores) == 5 and out.scores[0].shape == (3 * 2, config.generator.vocab_size)
    assert out.sequences_scores.shape == (3,)


def test_num_return_sequences_from_generation_config(pair, questions):
    """Defect 7 of the original: its private loop raised on a configured num_return_sequences."""
    import copy

    ours, _, _ = pair("token", "dpr", "bart")
    ids, mask = questions
    generation_config = copy.deepcopy(ours.generation_config)
    generation_config.num_beams, generation_config.num_return_sequences = 3, 2
    out = ours.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config, max_length=6)
    assert out.shape[0] == 6


def test_provenance(pair, questions, tiny_retriever):
    ours, _, config = pair("token", "dpr", "bart")
    ids, mask = questions
    out = ours.generate(input_ids=ids, attention_mask=mask, num_beams=2, num_return_sequences=2, output_provenance=True)
    assert isinstance(out, RetrievAugGenerateOutput)
    plain = ours.generate(input_ids=ids, attention_mask=mask, num_beams=2, num_return_sequences=2)
    np.testing.assert_array_equal(out.sequences.numpy(), plain.numpy())
    retrieved = ours.rag(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor([[2]] * 3), output_retrieved=True)
    np.testing.assert_array_equal(out.doc_ids.numpy(), retrieved.retrieved_doc_ids.repeat_interleave(2, 0).numpy())
    np.testing.assert_allclose(out.doc_scores.numpy(), retrieved.doc_scores.repeat_interleave(2, 0).detach().numpy(), rtol=1e-6)
    titles = tiny_retriever("bart", "dpr").index.get_doc_dicts(out.doc_ids.numpy())
    assert out.doc_titles == [list(d["title"]) for d in titles]
    assert out.sequences_scores is None  # beam scores need output_scores=True, as in transformers

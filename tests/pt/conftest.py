"""Fixtures of the PyTorch suite: model pairs (ours + oracle on the same weights), cached per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)  # the suite's budget is one core; also makes timings of tiny models stable


@pytest.fixture(scope="session")
def pair(tiny_passages_dir, tiny_retriever, question_encoder_tokenizer, generator_tokenizers):
    """Factory: `pair(head, question_encoder, generator, retriever=True)` -> (ours, oracle, config).

    With `retriever=True`, ours gets our RagRetriever and the oracle transformers' RagRetriever,
    both over the harness index. Cached per arguments: do not mutate the models in tests.
    """
    from tests.pt import support

    cache = {}

    def factory(head="token", question_encoder="dpr", generator="bart", retriever=True):
        key = (head, question_encoder, generator, retriever)
        if key not in cache:
            ours, oracle, config = support.build_pair(question_encoder, generator, head, passages_dir=tiny_passages_dir)
            if retriever:
                ours.set_retriever(tiny_retriever(generator, question_encoder))
                oracle.set_retriever(
                    support.oracle_retriever(config, question_encoder_tokenizer, generator_tokenizers[generator])
                )
            cache[key] = (ours, oracle, config)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def questions(question_encoder_tokenizer):
    """Three questions (one padded), as (input_ids, attention_mask)."""
    from tests.harness.retrieval import QUESTIONS
    from tests.pt import support

    return support.question_ids(question_encoder_tokenizer, QUESTIONS[:3])

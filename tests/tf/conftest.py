"""Fixtures of the TensorFlow suite: one tiny model pair per head, built once per session (graph
tracing dominates the suite's time, so models and their compiled functions are shared)."""

import pytest

from tests.tf import support


@pytest.fixture(scope="session")
def token_pair():
    return support.build_pair("token")


@pytest.fixture(scope="session")
def sequence_pair():
    return support.build_pair("sequence")


@pytest.fixture(scope="session")
def bart_contexts(bart_tokenizer):
    return support.make_contexts(bart_tokenizer, batch_size=2, n_docs=3)


@pytest.fixture(scope="session")
def bart_labels(bart_tokenizer):
    return support.make_labels(bart_tokenizer, ["Berlin", "the capital of France is Paris"])


@pytest.fixture(scope="module")
def data(question_encoder_tokenizer, bart_tokenizer):
    """Four questions of the tiny index with their answers as labels (int32, as Keras feeds them)."""
    import numpy as np

    from tests.harness.retrieval import QUESTIONS

    q = question_encoder_tokenizer(QUESTIONS, padding=True, return_tensors="np")
    return {
        "input_ids": q["input_ids"].astype(np.int32),
        "attention_mask": q["attention_mask"].astype(np.int32),
        "labels": support.make_labels(bart_tokenizer, ["Moses", "Berlin", "William Shakespeare", "Africa"]),
    }

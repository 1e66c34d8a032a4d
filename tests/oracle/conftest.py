"""The oracle suites: transformers 4.57's TensorFlow RAG classes (only in the oracle environment,
`make test-oracle`) against ours on the same weights."""

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

"""Top-level pytest configuration: framework selection and the shared fixtures.

Frameworks: tests under `tests/pt` need torch, `tests/tf` need tensorflow, `tests/cross` need both.
`RAG_TEST_FRAMEWORKS=pt` (or `tf`, or `pt,tf`) picks which run; a framework that is not installed is
skipped with a reason. Long tiers carry the `slow` marker and stay out of `make test`.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_INSTALLED = {
    "pt": importlib.util.find_spec("torch") is not None,
    "tf": importlib.util.find_spec("tensorflow") is not None,
}
# transformers 4.x ships TensorFlow classes (the original's TF RAG: the oracle); 5.x does not.
_HAS_TF_ORACLE = _INSTALLED["tf"] and importlib.util.find_spec("tf_keras") is not None
_SELECTED = {f.strip() for f in os.environ.get("RAG_TEST_FRAMEWORKS", "pt,tf").split(",") if f.strip()}


def framework_skip_reason(framework: str) -> str | None:
    if framework not in _SELECTED:
        return f"{framework} not selected (RAG_TEST_FRAMEWORKS={os.environ.get('RAG_TEST_FRAMEWORKS')})"
    if not _INSTALLED[framework]:
        return f"{framework} is not installed"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = set(item.path.parts)
        needs = set()
        if "pt" in parts or item.get_closest_marker("pt"):
            needs.add("pt")
        if "tf" in parts or item.get_closest_marker("tf"):
            needs.add("tf")
        if "cross" in parts or item.get_closest_marker("cross"):
            needs |= {"pt", "tf"}
        if "oracle" in parts:
            needs.add("tf")
            item.add_marker(pytest.mark.oracle)
            if not _HAS_TF_ORACLE:
                item.add_marker(pytest.mark.skip(reason="needs transformers 4.x TensorFlow RAG classes "
                                                       "(the oracle environment, `make test-oracle`)"))
        for framework in sorted(needs):
            item.add_marker(getattr(pytest.mark, framework))
            reason = framework_skip_reason(framework)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


# === Shared fixtures ===
@pytest.fixture(scope="session")
def question_encoder_tokenizer():
    from tests.harness.tokenizers import question_encoder_tokenizer

    return question_encoder_tokenizer()


@pytest.fixture(scope="session")
def bart_tokenizer():
    from tests.harness.tokenizers import bart_tokenizer

    return bart_tokenizer()


@pytest.fixture(scope="session")
def t5_tokenizer():
    from tests.harness.tokenizers import t5_tokenizer

    return t5_tokenizer()


@pytest.fixture(scope="session")
def generator_tokenizers(bart_tokenizer, t5_tokenizer):
    return {"bart": bart_tokenizer, "t5": t5_tokenizer}


# === Retrieval fixtures (tests/harness/retrieval.py) ===
@pytest.fixture(scope="session")
def tiny_passages_dir(tmp_path_factory):
    """The harness PASSAGES on disk: `passages/` (save_to_disk, 16-dim embeddings) and a flat IP `index.faiss`."""
    from tests.harness.retrieval import write_tiny_passages

    return write_tiny_passages(tmp_path_factory.mktemp("tiny_passages"))


@pytest.fixture(scope="session")
def tiny_retriever(tiny_passages_dir, question_encoder_tokenizer, generator_tokenizers):
    """Factory: `tiny_retriever(generator="bart", question_encoder="dpr", **config_kwargs)` -> RagRetriever.

    Retrievers are cached per arguments for the session; do not mutate them in tests.
    """
    from tests.harness.configs import tiny_rag_config
    from tests.harness.retrieval import make_tiny_retriever, tiny_index_paths

    cache = {}

    def factory(generator: str = "bart", question_encoder: str = "dpr", **config_kwargs):
        key = (generator, question_encoder, tuple(sorted(config_kwargs.items())))
        if key not in cache:
            kwargs = {**tiny_index_paths(tiny_passages_dir), **config_kwargs}
            config = tiny_rag_config(question_encoder, generator, **kwargs)
            cache[key] = make_tiny_retriever(config, question_encoder_tokenizer, generator_tokenizers[generator])
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_retriever_bart(tiny_retriever):
    return tiny_retriever("bart")


@pytest.fixture(scope="session")
def tiny_retriever_t5(tiny_retriever):
    return tiny_retriever("t5")


# === transformers' own TensorFlow classes (tests/harness/markers.py: `requires_transformers_tf`) ===
@pytest.fixture
def transformers_tf_classes():
    """Skips the test unless transformers' TensorFlow classes can be imported (transformers 4.x + TF)."""
    from tests.harness.markers import TRANSFORMERS_TF_REASON, has_transformers_tf

    if not has_transformers_tf():
        pytest.skip(TRANSFORMERS_TF_REASON)

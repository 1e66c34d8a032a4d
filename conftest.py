"""Top-level pytest configuration: framework selection and the shared fixtures.

Frameworks: tests under `tests/pt` need torch, `tests/tf` need tensorflow, `tests/cross` need both.
`RAG_TEST_FRAMEWORKS=pt` (or `tf`, or `pt,tf`) picks which run; a framework that is not installed is
skipped with a reason. Long tiers carry the `slow` marker and stay out of `make test`.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_INSTALLED = {
    "pt": importlib.util.find_spec("torch") is not None,
    "tf": importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("tf_keras") is not None,
}
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

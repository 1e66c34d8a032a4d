"""Fixtures of the docs suite: tiny local folders standing in for the hub ids the documentation names.

Every checkpoint here is written by transformers' own classes (`RagTokenForGeneration.save_pretrained`,
`RagTokenizer.save_pretrained`, `DPRQuestionEncoder.save_pretrained`, ...), so the examples also
check that what transformers saves loads here. Built once per session.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory, question_encoder_tokenizer, bart_tokenizer):
    """`{name: folder}` for the names of `tests.docs.support.HUB_IDS`:

    - "rag-token", "rag-sequence": DPR + BART RAG checkpoints (transformers' RagTokenForGeneration /
      RagSequenceForGeneration and RagTokenizer) whose config is a hub config's: index "compressed"
      on wiki_dpr, no local index paths;
    - "dpr-question-encoder", "t5", "bart": stand-alone sub-models (transformers' PyTorch classes).
    """
    torch = pytest.importorskip("torch", reason="the stand-ins are written by transformers' PyTorch classes")

    from tests.docs import support

    torch.set_num_threads(1)  # tiny models; the machine is shared
    root = tmp_path_factory.mktemp("hub_stand_ins")
    folders = {
        "rag-token": support.write_rag_checkpoint(root / "rag-token", "token", 0, question_encoder_tokenizer, bart_tokenizer),
        "rag-sequence": support.write_rag_checkpoint(
            root / "rag-sequence", "sequence", 1, question_encoder_tokenizer, bart_tokenizer
        ),
    }
    folders.update(support.write_sub_models(root))
    return folders


@pytest.fixture(scope="session")
def kb(tiny_passages_dir):
    """`{"passages_path", "index_path"}` of the tiny `custom` knowledge base (the harness passages)."""
    from tests.harness.retrieval import tiny_index_paths

    return tiny_index_paths(tiny_passages_dir)


@pytest.fixture(scope="session")
def rag_checkpoint_with_index(stand_ins, tiny_passages_dir, tmp_path_factory):
    """The "rag-token" stand-in with its config pointing at the tiny index: a checkpoint from which
    `RagRetriever.from_pretrained(path)` works as it is (README's "path/to/rag-checkpoint")."""
    from tests.docs import support

    return support.with_local_index(
        stand_ins["rag-token"], tmp_path_factory.mktemp("with_index") / "rag-checkpoint", tiny_passages_dir
    )

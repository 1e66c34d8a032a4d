"""Fixtures of the fine-tuning suite: one tiny index, one toy data folder and tiny checkpoints per session."""

from __future__ import annotations

import pytest

from tests.finetune import support


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory):
    return support.build_tiny_index(tmp_path_factory.mktemp("finetune") / "kb")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return support.write_toy_data(tmp_path_factory.mktemp("finetune_data"))


@pytest.fixture(scope="session")
def pt_checkpoint(tmp_path_factory, index_dir):
    import torch

    torch.set_num_threads(1)
    return support.pt_checkpoint(tmp_path_factory.mktemp("pt") / "rag", index_dir)


@pytest.fixture(scope="session")
def tf_checkpoint(tmp_path_factory, index_dir):
    return support.tf_checkpoint(tmp_path_factory.mktemp("tf") / "rag", index_dir)

"""The retriever with PyTorch: `from_pretrained(path, retriever=...)` on checkpoints written by
transformers' RAG classes, DataLoader workers in other processes, torch tensors as question ids."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.harness.retrieval import QUESTIONS, tiny_question_ids, tiny_question_vectors
from tests.pt import support

KEYS = ("context_input_ids", "context_attention_mask", "retrieved_doc_embeds", "doc_ids")


@pytest.fixture(scope="module")
def oracle_checkpoints(tmp_path_factory, tiny_passages_dir):
    """One checkpoint per head, written by transformers' own RAG class (random weights)."""
    import transformers

    from tests.harness.configs import tiny_rag_config
    from tests.harness.retrieval import tiny_index_paths

    config = tiny_rag_config("dpr", "bart", **tiny_index_paths(tiny_passages_dir))
    folders = {}
    for head in ("model", "token", "sequence"):
        torch.manual_seed(0)
        oracle = support.oracle_class(head)(transformers.RagConfig(**config.to_dict())).eval()
        folders[head] = tmp_path_factory.mktemp(f"oracle_{head}")
        oracle.save_pretrained(folders[head])
    return folders


@pytest.mark.parametrize("head", ["model", "token", "sequence"])
def test_from_pretrained_with_a_retriever_on_a_transformers_checkpoint(
    oracle_checkpoints, tiny_retriever, questions, head
):
    retriever = tiny_retriever("bart")
    model = support.ours_class(head).from_pretrained(oracle_checkpoints[head], retriever=retriever).eval()
    assert model.retriever is retriever  # attached as given, not a copy
    plain = support.ours_class(head).from_pretrained(oracle_checkpoints[head]).eval()
    assert plain.retriever is None
    plain.set_retriever(retriever)
    ids, mask = questions
    labels = ids[:, :4] % 1000
    kwargs = dict(decoder_input_ids=labels) if head == "model" else dict(labels=labels)
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, **kwargs)
        b = plain(input_ids=ids, attention_mask=mask, **kwargs)
    torch.testing.assert_close(a.doc_scores, b.doc_scores, rtol=0, atol=0)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    loaded, info = support.ours_class(head).from_pretrained(oracle_checkpoints[head], retriever=retriever, output_loading_info=True)
    assert loaded.retriever is retriever and not info["missing_keys"]


class _Questions(torch.utils.data.Dataset):
    """Question i: its ids and vector, retrieved in the worker that loads it."""

    def __init__(self, retriever, question_ids, vectors):
        self.retriever, self.question_ids, self.vectors = retriever, question_ids, vectors

    def __len__(self):
        return len(self.vectors)

    def __getitem__(self, i):
        out = self.retriever(self.question_ids[i : i + 1], self.vectors[i : i + 1], n_docs=3, return_tensors="np")
        return {key: np.asarray(out[key]) for key in KEYS} | {"pid": os.getpid()}


def _as_is(item):
    return item


def test_dataloader_workers_in_other_processes_retrieve_what_this_process_does(
    tiny_retriever, question_encoder_tokenizer
):
    retriever = tiny_retriever("t5")
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS)
    vectors = tiny_question_vectors(near=[0, 4, 8, 11])
    dataset = _Questions(retriever, question_ids, vectors)
    expected = [dataset[i] for i in range(len(dataset))]
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn", collate_fn=_as_is
    )
    got = list(loader)
    assert {item["pid"] for item in got}.isdisjoint({os.getpid()})
    for a, b in zip(got, expected):
        for key in KEYS:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_torch_question_ids_are_accepted(tiny_retriever, question_encoder_tokenizer):
    retriever = tiny_retriever("bart")
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:3])
    vectors = tiny_question_vectors(near=[1, 2, 3])
    expected = retriever(question_ids, vectors, return_tensors="np")
    for ids in (torch.from_numpy(question_ids), torch.from_numpy(question_ids.T.copy()).T):  # contiguous or not
        out = retriever(ids, vectors, return_tensors="pt")
        assert isinstance(out["context_input_ids"], torch.Tensor)
        for key in KEYS:
            np.testing.assert_array_equal(out[key].numpy(), expected[key], err_msg=key)

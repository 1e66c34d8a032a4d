"""The models of both frameworks with a retriever over the Ray service: the same numbers, ids and
provenance as with the same shards searched in-process."""

from __future__ import annotations

import numpy as np
import pytest

from rag_core import RagRetriever, RagTokenizer
from rag_core.build_index import build_index
from rag_core.serving import RayIndexService
from tests.harness.configs import HIDDEN, tiny_rag_config
from tests.harness.passages import PASSAGES
from tests.harness.retrieval import QUESTIONS

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def setup(ray_cluster, tmp_path_factory, question_encoder_tokenizer, bart_tokenizer):
    root = tmp_path_factory.mktemp("models-over-service")
    vectors = np.random.default_rng(11).standard_normal((len(PASSAGES), HIDDEN)).astype(np.float32)
    folder = build_index(PASSAGES, root / "kb", embeddings=vectors, shards=3, split=False, progress=False,
                         generator_tokenizer=bart_tokenizer)
    config = tiny_rag_config("dpr", "bart", passages_path=folder, n_docs=3, max_combined_length=64)
    service = RayIndexService.start(folder, name="models-over-service", num_cpus=0.5, replicas=2)
    local = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    served = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer, index=service.index())
    tokenizer = RagTokenizer(question_encoder_tokenizer, bart_tokenizer)
    batch = tokenizer(list(QUESTIONS[:3]), text_target=["an answer", "another one", "a third"], return_tensors="np",
                      padding=True)
    yield config, local, served, batch
    service.shutdown()


@pytest.mark.pt
@pytest.mark.parametrize("head", ["token", "sequence"])
def test_pytorch_models_over_the_service(setup, head):
    import torch

    from rag_pt import RagSequenceForGeneration, RagTokenForGeneration

    config, local, served, batch = setup
    torch.manual_seed(0)
    model = (RagTokenForGeneration if head == "token" else RagSequenceForGeneration)(config=config).eval()
    inputs = {k: torch.as_tensor(batch[k]) for k in ("input_ids", "attention_mask")}
    labels = torch.as_tensor(batch["labels"])
    results = []
    for retriever in (local, served):
        model.set_retriever(retriever)
        with torch.no_grad():
            out = model(**inputs, labels=labels, output_retrieved=True)
            generated = model.generate(**inputs, num_beams=2, num_return_sequences=2, max_length=6, output_provenance=True)
        results.append((out, generated))
    (a, ga), (b, gb) = results
    np.testing.assert_array_equal(b.retrieved_doc_ids.numpy(), a.retrieved_doc_ids.numpy())
    np.testing.assert_array_equal(b.context_input_ids.numpy(), a.context_input_ids.numpy())
    np.testing.assert_allclose(b.doc_scores.numpy(), a.doc_scores.numpy(), rtol=1e-6)
    np.testing.assert_allclose(b.loss.numpy(), a.loss.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(gb.sequences.numpy(), ga.sequences.numpy())
    assert gb.doc_titles == ga.doc_titles and all(len(row) == 3 for row in gb.doc_titles)


@pytest.mark.tf
def test_tensorflow_model_over_the_service(setup):
    from rag_tf import TFRagTokenForGeneration

    config, local, served, batch = setup
    model = TFRagTokenForGeneration(config=config)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    results = []
    for retriever in (local, served):
        model.set_retriever(retriever)
        out = model(**inputs, labels=batch["labels"], output_retrieved=True)
        generated = model.generate(**inputs, num_beams=2, max_length=6)
        results.append((out, generated))
    (a, ga), (b, gb) = results
    np.testing.assert_array_equal(np.asarray(b.retrieved_doc_ids), np.asarray(a.retrieved_doc_ids))
    np.testing.assert_allclose(np.asarray(b.doc_scores), np.asarray(a.doc_scores), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(b.loss), np.asarray(a.loss), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(gb), np.asarray(ga))

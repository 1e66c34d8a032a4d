"""README.md's Ray block ("Serve an index with Ray"), executed as written on tiny sharded indexes."""

from __future__ import annotations

import numpy as np
import pytest

from rag_core.build_index import build_index
from tests.docs import support
from tests.docs.test_readme import BLOCKS, block
from tests.harness.configs import HIDDEN, tiny_rag_config

ray = pytest.importorskip("ray")

FIRST_LINE = "from rag_core import RagRetriever, RayIndex, RayIndexService"


def test_readme_ray_block_runs_as_written(ray_cluster, tmp_path, question_encoder_tokenizer, bart_tokenizer):
    from tests.harness.retrieval import QUESTIONS, tiny_question_ids

    code = block(FIRST_LINE)
    spec = BLOCKS[FIRST_LINE]
    assert {s for s in support.string_literals(code) if s.startswith("path/to/")} == set(spec.placeholders)
    assert support.undefined_names(code) == spec.prepared
    vectors = np.random.default_rng(0).standard_normal((40, HIDDEN)).astype(np.float32)
    folders = {}
    for placeholder in spec.placeholders:
        tag = "v2" if placeholder.endswith("v2") else "v1"
        pairs = [(f"{tag} title {i}", f"{tag} text {i}") for i in range(40)]
        folders[placeholder] = build_index(pairs, tmp_path / placeholder.replace("/", "_"), embeddings=vectors,
                                           shards=4, split=False, progress=False)
        code = code.replace(f'"{placeholder}"', repr(folders[placeholder]))
    code = code.replace("num_cpus=1)", "num_cpus=0.25)")  # 8 actors on a small test cluster
    assert code.rstrip().endswith("service.shutdown()")
    body = code.rstrip()[: -len("service.shutdown()")]  # run up to the shutdown, check, then shut down
    config = tiny_rag_config("dpr", "bart", passages_path=folders["path/to/kb_shards"], max_combined_length=64)
    namespace = {"config": config, "q_tok": question_encoder_tokenizer, "g_tok": bart_tokenizer}
    support.run(body, namespace, name="README.md")
    service, retriever = namespace["service"], namespace["retriever"]
    try:
        assert service.version == 2  # swapped
        status = service.status()
        assert sorted((row["shard"], row["replica"]) for row in status) == [(k, r) for k in range(4) for r in range(2)]
        # the retriever made from the name alone answers from the new version, exactly as in-process
        question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])
        _, ids, dicts = retriever.retrieve(vectors[[3, 27]], 3)
        assert ids[:, 0].tolist() == [3, 27] and dicts[0]["title"][0] == "v2 title 3"
        out = retriever(question_ids, vectors[[3, 27]], n_docs=3)
        assert np.asarray(out["context_input_ids"]).shape[0] == 6
    finally:
        support.run("service.shutdown()", namespace, name="README.md")
    with pytest.raises(Exception, match="kb"):
        service.version

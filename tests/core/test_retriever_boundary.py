"""Boundary: rag_core retrieves with torch and tensorflow unimportable (as in an install without them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None        # unimportable, like an install without it
    sys.modules["tensorflow"] = None
    import json
    from rag_core import RagRetriever
    from tests.harness.configs import tiny_rag_config
    from tests.harness.retrieval import QUESTIONS, tiny_index_paths, tiny_question_ids, tiny_question_vectors
    from tests.harness.tokenizers import question_encoder_tokenizer, t5_tokenizer

    q_tok = question_encoder_tokenizer()
    config = tiny_rag_config("dpr", "t5", **tiny_index_paths(sys.argv[1]))
    retriever = RagRetriever(config, q_tok, t5_tokenizer())
    out = retriever(tiny_question_ids(q_tok, QUESTIONS[:2]), tiny_question_vectors(near=[0, 2]))
    loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("torch", "tensorflow"))
    print(json.dumps({"doc_ids": out["doc_ids"].tolist(), "rows": len(out["context_input_ids"]), "loaded": loaded}))
    """
)


def test_retrieval_runs_without_torch_and_tensorflow(tiny_passages_dir):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_passages_dir)], capture_output=True, text=True, cwd=root, env=env, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert report["rows"] == 6
    assert [row[0] for row in report["doc_ids"]] == [0, 2]

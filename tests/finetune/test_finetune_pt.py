"""`python -m rag_pt.finetune` / `rag_pt.evaluate` through `main(argv)`: learning, checkpoints, resume, refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from rag_core import OutputExistsError, ResumeError
from tests.finetune import support

pytestmark = pytest.mark.pt


def _argv(checkpoint, data_dir, run_dir, *extra):
    return ["--model_name_or_path", str(checkpoint), "--data_dir", str(data_dir), "--output_dir", str(run_dir),
            "--train_batch_size", "4", "--logging_steps", "1", "--no_progress", *extra]


def test_em_rises_and_best_checkpoints_are_kept(pt_checkpoint, data_dir, tmp_path):
    from rag_pt import RagTokenForGeneration, evaluate, finetune

    run_dir = tmp_path / "run"
    assert finetune.main(_argv(pt_checkpoint, data_dir, run_dir, "--max_steps", "24", "--eval_steps", "8",
                               "--learning_rate", "1e-2", "--lr_scheduler", "constant", "--save_total_limit", "2")) == 0
    evals = support.evals(run_dir)
    assert [e["step"] for e in evals] == [8, 16, 24]
    assert evals[0]["eval_em"] == 0.0 and evals[-1]["eval_em"] == 1.0  # the toy answer is learnt
    losses = [loss for _, loss in support.train_losses(run_dir)]
    assert len(losses) == 24 and losses[-1] < losses[0] / 4
    state = json.loads((run_dir / "trainer_state.json").read_text())
    kept = sorted(os.listdir(run_dir / "checkpoints"))
    ranked = [e["step"] for e in sorted(evals, key=lambda e: (-e["eval_em"], e["step"]))][:2]  # ties: earlier wins
    assert kept == ["last"] + sorted(f"step-{s:06d}" for s in ranked)
    assert [b["step"] for b in state["best"]] == ranked
    scalars = support.tensorboard_scalars(run_dir / "tensorboard")
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], losses, rtol=1e-6)  # float32 in the events
    assert [s for s, _ in scalars["eval/em"]] == [8, 16, 24] and (run_dir / "config.json").is_file()
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(p["answer"] == support.ANSWER for p in predictions)
    assert all(len(p["doc_ids"]) == 2 and len(p["titles"]) == 2 for p in predictions)

    best = state["best"][0]["path"]  # a complete model folder: the evaluate command reads it
    out, metrics_path = tmp_path / "preds.jsonl", tmp_path / "metrics.json"
    assert evaluate.main(["--model_name_or_path", best, "--eval_file", os.path.join(data_dir, "val.jsonl"),
                          "--predictions_path", str(out), "--metrics_path", str(metrics_path), "--no_progress"]) == 0
    assert json.loads(metrics_path.read_text())["em"] == 1.0
    assert RagTokenForGeneration.from_pretrained(best).config.n_docs == 2


def test_interrupt_then_resume_reproduces_the_loss_curve(pt_checkpoint, data_dir, tmp_path):
    from rag_pt import finetune

    common = ("--max_steps", "6", "--eval_steps", "4", "--learning_rate", "3e-3", "--warmup_steps", "2",
              "--gradient_accumulation_steps", "2", "--train_batch_size", "3")
    straight = tmp_path / "straight"
    assert finetune.main(_argv(pt_checkpoint, data_dir, straight, *common)) == 0

    def interrupt_at_3(state, model):
        if state.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the run stops at the end of this step

    resumed = tmp_path / "resumed"
    args = finetune.parse_finetune_args(_argv(pt_checkpoint, data_dir, resumed, *common), "test")
    summary = finetune.train(args, callbacks=[interrupt_at_3])
    assert summary["interrupted"] and summary["global_step"] == 3
    assert json.loads((resumed / "checkpoints" / "last" / "trainer_state.json").read_text())["global_step"] == 3
    assert finetune.main(_argv(pt_checkpoint, data_dir, resumed, *common, "--resume")) == 0

    want, got = support.train_losses(straight), support.train_losses(resumed)
    assert [s for s, _ in got] == [1, 2, 3, 4, 5, 6] == [s for s, _ in want]
    # dropout (the DPR encoder's) draws from the restored RNG: the curve is the same, bit for bit
    np.testing.assert_allclose([l for _, l in got], [l for _, l in want], rtol=0, atol=0)
    assert [e["eval_em"] for e in support.evals(resumed)] == [e["eval_em"] for e in support.evals(straight)]


def test_cached_retrieval_with_an_extra_index(pt_checkpoint, data_dir, index_dir, tmp_path):
    """`--cache_retrieval` trains on stored passages; `--extra_train_file` adds examples retrieved from another index."""
    from rag_core.training.cached import CachedRetrieval
    from rag_pt import finetune

    extra = support.write_jsonl(tmp_path / "extra.jsonl", [{"question": q, "answers": ["Lyon"]}
                                                            for q in support.TRAIN_QUESTIONS])
    run_dir = tmp_path / "run"
    seen = []
    args = finetune.parse_finetune_args(_argv(
        pt_checkpoint, data_dir, run_dir, "--max_steps", "4", "--eval_steps", "4", "--learning_rate", "1e-2",
        "--freeze_question_encoder", "--cache_retrieval", "--extra_train_file", extra,
        "--extra_index_path", str(index_dir)), "test")
    original = CachedRetrieval.batch

    def spy(self, indices):
        batch = original(self, indices)
        seen.append((len(self), batch))
        return batch

    CachedRetrieval.batch = spy
    try:
        summary = finetune.train(args)
    finally:
        CachedRetrieval.batch = original
    assert summary["global_step"] == 4 and not summary["interrupted"]
    # 8 training + 8 extra examples, 4 per batch: the epoch ends after the 4th step (2 without the extra file)
    records = support.read_metrics(run_dir)
    assert [(r["step"], r["epoch"]) for r in records if "loss" in r] == [(1, 0), (2, 0), (3, 0), (4, 1)]
    assert {n for n, _ in seen} == {16}
    for _, batch in seen:
        assert batch["context_input_ids"].shape[0] == 2 * batch["labels"].shape[0] == 2 * batch["doc_scores"].shape[0]
        assert (batch["context_attention_mask"].sum(1) > 0).all() and np.isfinite(batch["doc_scores"]).all()
    # both answers are trained on: the extra examples' labels are Lyon's
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.join(str(pt_checkpoint), "generator_tokenizer"))
    answers = {tok.decode(row, skip_special_tokens=True).strip() for _, b in seen for row in b["labels"]}
    assert answers == {support.ANSWER, "Lyon"}
    # the stored vectors and retrievals: one file of vectors, one retrieval (both sources ask the same
    # questions of the same index); a second run reads them and never runs the question encoder
    store = tmp_path / "store"
    argv = _argv(pt_checkpoint, data_dir, tmp_path / "first", "--max_steps", "2", "--freeze_question_encoder",
                 "--cache_retrieval", "--retrieval_cache_dir", str(store), "--extra_train_file", extra,
                 "--extra_index_path", str(index_dir))
    assert finetune.main(argv) == 0
    assert len(list(store.glob("*.npz"))) == 2
    calls = []
    original_vectors = finetune.Predictor.question_vectors
    finetune.Predictor.question_vectors = lambda self, batch: calls.append(1) or original_vectors(self, batch)
    try:
        second = [a if a != str(tmp_path / "first") else str(tmp_path / "second") for a in argv]
        assert finetune.main(second) == 0
    finally:
        finetune.Predictor.question_vectors = original_vectors
    assert calls == [] and len(list(store.glob("*.npz"))) == 2
    np.testing.assert_allclose([l for _, l in support.train_losses(tmp_path / "second")],
                               [l for _, l in support.train_losses(tmp_path / "first")], rtol=1e-6)


def test_a_run_folder_is_refused_unless_resume_or_overwrite(pt_checkpoint, data_dir, tmp_path, capsys):
    from rag_pt import finetune

    run_dir = tmp_path / "run"
    assert finetune.main(_argv(pt_checkpoint, data_dir, run_dir, "--max_steps", "1")) == 0
    assert finetune.main(_argv(pt_checkpoint, data_dir, run_dir, "--max_steps", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    with pytest.raises(OutputExistsError, match="--resume to continue it, --overwrite"):
        finetune.train(finetune.parse_finetune_args(_argv(pt_checkpoint, data_dir, run_dir, "--max_steps", "1"), "t"))
    with pytest.raises(ResumeError, match="--learning_rate"):
        finetune.train(finetune.parse_finetune_args(
            _argv(pt_checkpoint, data_dir, run_dir, "--max_steps", "2", "--learning_rate", "1", "--resume"), "t"))
    (run_dir / "notes.txt").write_text("mine")
    assert finetune.main(_argv(pt_checkpoint, data_dir, run_dir, "--max_steps", "2", "--overwrite")) == 0
    assert [s for s, _ in support.train_losses(run_dir)] == [1, 2]  # the old run's log is gone
    assert (run_dir / "notes.txt").read_text() == "mine"  # files that are not the run's are kept
    with pytest.raises(ResumeError, match="no resumable checkpoint"):
        finetune.train(finetune.parse_finetune_args(
            _argv(pt_checkpoint, data_dir, tmp_path / "empty", "--max_steps", "2", "--resume"), "t"))


def test_torchrun_two_cpu_processes(pt_checkpoint, data_dir, tmp_path):
    """Also the command's subprocess smoke (`-m rag_pt.finetune`), with the RAG-Sequence head."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run([*torchrun, "-m", "rag_pt.finetune",
                             *_argv(pt_checkpoint, data_dir, run_dir, "--max_steps", "3", "--eval_steps", "2",
                                    "--train_batch_size", "2", "--model_type", "rag_sequence")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # 8 examples, 2 processes x 2 per batch: 2 steps per epoch; one validation log per eval (rank 0 only)
    records = support.read_metrics(run_dir)
    assert [(r["step"], r["epoch"]) for r in records if "loss" in r] == [(1, 0), (2, 1), (3, 1)]
    assert [e["step"] for e in support.evals(run_dir)] == [2, 3]
    assert json.loads((run_dir / "checkpoints" / "last" / "trainer_state.json").read_text())["global_step"] == 3
    assert json.loads((run_dir / "checkpoints" / "last" / "config.json").read_text())["architectures"] == [
        "RagSequenceForGeneration"]
    assert "trained 3 steps; best validation EM" in result.stdout

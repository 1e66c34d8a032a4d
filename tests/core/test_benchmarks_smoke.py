"""The benchmark harness itself (not the benchmarks): timing helper, result rows, RESULTS.md writer, device check.

Fast: nothing here builds a model or an index.
"""

from __future__ import annotations

import sys

import pytest

from benchmarks import common, report, run_all

def test_case_ratio_is_original_over_ours_and_checks_the_target():
    row = common.case("RAG-Token generate greedy", 0.25, 1.0, target=2.0, items=160, items_unit="tokens")
    assert row["ratio"] == pytest.approx(4.0)
    assert row["met"] is True
    assert row["ours_per_s"] == pytest.approx(640.0)
    missed = common.case("training step", 1.0, 1.2, target=1.5)
    assert missed["met"] is False
    unmeasured = common.case("RAG-Sequence generate beam 4", 1.0, None, target=4.0)
    assert unmeasured["ratio"] is None and unmeasured["met"] is None


def test_compare_warms_up_then_alternates_and_takes_the_median():
    calls = []
    ours, original = common.compare(lambda: calls.append("o"), lambda: calls.append("x"), warmup=1, repeats=3)
    assert calls == ["o", "x", "o", "x", "x", "o", "o", "x"]  # warm-ups, then alternating pairs
    assert ours.repeats == 3 and original.repeats == 3 and len(ours.warmup_s) == 1
    assert ours.median_s == sorted(ours.times_s)[1]


def test_normalize_accepts_aliases_of_other_suites():
    result = run_all.normalize_result(
        "pt", {"cases": {"train": {"ours": 0.5, "oracle_s": {"median_s": 1.0}, "target_ratio": 1.5}}}
    )
    (row,) = result["cases"]
    assert row["name"] == "train" and row["ratio"] == pytest.approx(2.0) and row["met"] is True


def fake_results():
    pt = common.suite_result(
        "pt",
        [
            common.case("train step RAG-Token (fwd+bwd)", 0.4, 0.82, target=1.5, items=40, items_unit="passages"),
            common.case("RAG-Sequence generate beam 4", 2.0, 5.2, target=4.0),
            common.failed_case("RAG-Token generate beam 4", "RuntimeError: boom", target=2.0),
        ],
        config={"batch": 8, "n_docs": 5},
    )
    pt.update(status="ok", label="pt", size="small")
    memory = common.suite_result("memory", [], memory=[
        {"kind": "flat", "peak_rss_mib": 900.0, "baseline_rss_mib": 200.0, "index_rss_mib": 700.0, "vs_flat": 1.0},
        {"kind": "ivfpq", "peak_rss_mib": 260.0, "baseline_rss_mib": 200.0, "index_rss_mib": 60.0,
         "vs_flat": 60 / 700, "target": "<= 1/8 of flat", "met": True},
    ])
    memory.update(status="ok", label="memory")
    tf = {"suite": "tf", "label": "tf", "status": "missing", "error": "benchmarks/bench_tf.py does not exist yet",
          "cases": []}
    return {"device": "cpu", "quick": False, "wall_s": 600, "machine": common.machine_info(),
            "versions": {"python": "3.11"}, "suites": [pt, tf, memory], "cross": []}


def test_results_markdown_has_ratio_target_and_verdict_columns():
    md = report.write_markdown(fake_results())
    assert "| pt | train step RAG-Token (fwd+bwd) | 400.0 ms (100 passages/s) | 820.0 ms (49 passages/s) | 2.05x | >= 1.5x | met |" in md
    assert "| RAG-Sequence generate beam 4 | 2.00 s | 5.20 s | 2.60x | >= 4x | **missed** |" in md
    assert "RAG-Token generate beam 4 — RuntimeError: boom" in md and "not run" in md
    assert "1 of 8 targets met (1 missed, 6 not measured)." in md  # the targets that no row answered count
    assert "| tf | RAG-Sequence generate — not measured (tf: missing) | — | — | — | >= 10x | not run |" in md
    assert "| ivfpq | 260 MiB | 200 MiB | 60 MiB | — | 0.086 | <= 1/8 of flat | met |" in md
    assert "## Missing" in md and "bench_tf.py does not exist yet" in md


def test_device_cuda_without_a_gpu_fails_with_a_clear_message(monkeypatch, capsys):
    import types

    fake_torch = types.SimpleNamespace(
        __version__="2.13.0+cpu", version=types.SimpleNamespace(cuda=None),
        cuda=types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0),
    )
    monkeypatch.setitem(sys.modules, "torch", fake_torch)  # a CPU-only torch, on any machine
    assert run_all.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda needs a CUDA GPU" in err and "no CUDA support" in err and "leave out --device" in err


def test_rows_are_recorded_as_they_are_made_so_a_timeout_keeps_them(tmp_path, monkeypatch):
    partial = tmp_path / "partial.jsonl"
    monkeypatch.setenv(common.PARTIAL_ENV, str(partial))
    common.case("a", 1.0, 2.0, target=1.5)
    common.failed_case("b", ValueError("bad"))
    rows = [__import__("json").loads(line)["row"] for line in partial.read_text().splitlines()]
    assert [(r["name"], r.get("error")) for r in rows] == [("a", None), ("b", "ValueError: bad")]


def test_jobs_run_in_priority_order_and_share_the_time_budget():
    jobs = run_all.plan_jobs(list(run_all.SUITES), "cpu", ["float32"], quick=False, base_size=True)
    labels = [job["label"] for job in jobs]
    assert labels[:3] == ["retriever", "pt", "tf"] and labels[-1] == "retriever index kinds"
    assert jobs[labels.index("pt base-size")]["kwargs"]["d_model"] == 768
    budget = 19 * 60
    first = run_all.job_timeout(jobs, 0, budget, budget, hard_max_s=10_000)
    last = run_all.job_timeout(jobs, len(jobs) - 1, 100.0, budget, hard_max_s=10_000)
    assert 0 < first < budget and last == 100.0  # the first leaves a reserve for the others; the last takes what is left
    cuda = run_all.plan_jobs(list(run_all.SUITES), "cuda:0", ["float32", "bfloat16"], quick=False, base_size=True)
    assert [job["kwargs"]["precision"] for job in cuda] == ["float32", "bfloat16"] and {j["suite"] for j in cuda} == {"pt"}

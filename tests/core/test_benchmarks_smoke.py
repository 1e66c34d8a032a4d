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
    assert "1 of 8 targets met (1 missed, 6 not measured)." in md  # the issue's targets that no row answered count
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


def test_suite_kwargs_reach_one_suite_only():
    jobs = run_all.plan_jobs(["pt", "tf"], "cpu", ["float32"], quick=False, base_size=True,
                             suite_kwargs={"tf": {"cases": ["call"]}})
    by_label = {job["label"]: job["kwargs"] for job in jobs}
    assert by_label["tf"]["cases"] == ["call"] and by_label["tf base-size"]["cases"] == ["call"]
    assert "cases" not in by_label["pt"] and "cases" not in by_label["pt base-size"]


def test_kept_sections_are_marked_not_rerun_with_their_date_and_commit(tmp_path):
    old = fake_results()
    old.update(created="2026-01-02 03:04 UTC", commit="abc1234", command="python -m benchmarks.run_all")
    path = tmp_path / "results.json"
    path.write_text(__import__("json").dumps(old))
    fresh = common.suite_result("retriever", [common.case("retriever __call__, like for like", 0.01, 0.02, target=5.0)])
    fresh.update(status="ok", label="retriever", versions={"transformers": "5.24.0", "torch": "2.13.0"},
                 environment=".venv", measured={"created": "2026-02-03 04:05 UTC", "commit": "def5678"})
    suites = run_all.merge_suites([fresh], [run_all.load_previous(str(path), kept=True)])
    assert [s["label"] for s in suites] == ["retriever", "pt", "tf", "memory"]  # JOB_ORDER, this run's suite first
    md = report.write_markdown(dict(fake_results(), suites=suites))
    assert "**Not re-run**: kept from an earlier run (2026-01-02 03:04 UTC, commit abc1234" in md
    assert "Measured 2026-02-03 04:05 UTC, commit def5678" in md
    assert "Versions (environment .venv; ours and the original in one process): transformers 5.24.0, torch 2.13.0." in md
    assert "| pt (not re-run: 2026-01-02 03:04 UTC, commit abc1234) | train step RAG-Token (fwd+bwd) |" in md
    assert "| retriever | retriever __call__, like for like | 10.0 ms | 20.0 ms | 2.00x | >= 5x | **missed** |" in md


def test_retriever_headline_is_like_for_like_and_pre_tokenized_rows_are_information():
    call = {"passages": 100, "dim": 8, "batch": 2, "n_docs": 5, "theirs_s": 0.08, "ours_tokenizing_cold_s": 0.04,
            "ours_cold_s": 0.01, "ours_warm_s": 0.008, "build_tokenizing_s": 2.0, "build_tokenizing_per_call_s": 0.2,
            "ours_amortized_cold_s": 0.21, "faiss_search_s": 0.02, "ratio_tokenizing_cold_excluding_search": 3.0,
            "hit_rate_tokenizing_cold": 0.05, "hit_rate_cold": 0.05, "hit_rate_warm": 0.5}
    cases = run_all.adapt_retriever({"call": call})["cases"]
    headline = [c for c in cases if c["target"] is not None]
    assert len(headline) == 1 and "like for like" in headline[0]["name"]
    assert headline[0]["ratio"] == pytest.approx(2.0) and headline[0]["met"] is False
    ratio = lambda word: next(c["ratio"] for c in cases[1:] if word in c["name"])  # noqa: E731
    assert ratio("reading passages pre-tokenized") == pytest.approx(8.0)
    assert ratio("amortized") == pytest.approx(0.08 / 0.21) and ratio("warm") == pytest.approx(10.0)
    assert all(c["target"] is None for c in cases[1:])


def test_retrieval_log_counts_cache_hits_and_padded_lengths():
    import numpy as np

    class Contexts:
        def cached_passages(self, doc_ids, *args, **kwargs):
            return list(np.asarray(doc_ids).reshape(-1))

        def assemble(self, questions, pieces, n_docs):
            width = 3 + len(questions)
            return np.zeros((len(pieces), width)), np.ones((len(pieces), width))

    retriever = type("Retriever", (), {"contexts": Contexts()})()
    log = common.RetrievalLog(retriever)
    mark = log.mark()
    for ids in ([[1, 2], [3, -1]], [[2, 3], [4, 5]]):  # -1: no passage, not counted
        pieces = retriever.contexts.cached_passages(np.array(ids))
        retriever.contexts.assemble(["q"] * len(ids), pieces, 2)
    stats = log.since(mark)
    assert stats["hit_rate"] == pytest.approx(2 / 7) and stats["padded_mean"] == 5 and stats["retriever_calls"] == 2


def test_time_case_gives_both_sides_the_same_fresh_batches_and_checks_their_ids():
    pool = [{"n": i} for i in range(10)]
    seen = {"ours": [], "original": []}

    def side(name, offset):
        return lambda batch: seen[name].append(batch["n"]) or [[batch["n"] + offset]]

    notes = []
    log = common.RetrievalLog(object())
    ours, original, _ = common.time_case(side("ours", 0), side("original", 1), common.Stream(pool), log, quick=False,
                                         budget_s=60, check_ids=True, notes=notes, name="case", ours_warmup=2)
    assert seen["ours"] == [0, 1, 2, 3, 4, 5, 6] and seen["original"] == [0, 2, 3, 4, 5, 6]
    assert ours.repeats == original.repeats == 5 and len(ours.warmup_s) == 2 and len(original.warmup_s) == 1
    assert len(notes) == 1 and "ids differ" in notes[0]


def test_import_table_flags_a_forbidden_framework_and_names_the_chain():
    from benchmarks import bench_imports

    row = {"import_s": 0.01, "classes_s": 2.0, "call_s": 0.5, "rss_after_import_mib": 12.0, "rss_after_classes_mib": 900.0,
           "rss_after_call_mib": 950.0, "loaded_after_import": [], "loaded_after_classes": ["tensorflow", "torch"],
           "loaded_after_call": ["tensorflow", "torch"], "peak_rss_mib": 950.0, "violations": ["torch"],
           "chains": {"torch": ["tests.harness.configs:5", "rag_tf:57", "transformers.modeling_rope_utils:28"]}}
    envs = {"main": {"versions": {"transformers": "5.24.0"}, "cases": {"rag_tf": row}}}
    (table,), notes = bench_imports.tables(envs)
    (line,) = [r for r in table["rows"] if r[1] == "rag_tf"]
    assert line[-1] == "no torch: **imports torch**" and line[-2] == "950 MiB"
    assert notes == ["main: python ?, transformers 5.24.0",
                     "main (transformers 5.24.0): rag_tf imports torch through rag_tf:57 → "
                     "transformers.modeling_rope_utils:28"]
    frames = [["/x/lib/site-packages/transformers/configuration_utils.py", 38, "from .modeling_rope_utils import X"],
              ["<frozen importlib._bootstrap>", 1, ""],
              ["/x/lib/site-packages/transformers/modeling_rope_utils.py", 27, "if is_torch_available():"],
              ["/x/lib/site-packages/transformers/modeling_rope_utils.py", 28, "import torch"]]
    assert bench_imports._module_chain(frames) == ["transformers.configuration_utils:38 `from .modeling_rope_utils import X`",
                                                   "transformers.modeling_rope_utils:28 `import torch`"]

"""The Ray serving benchmark (benchmarks/bench_ray_index.py) end to end on a tiny index, and its sizing on paper."""

from __future__ import annotations

import math
import time

import pytest

pytest.importorskip("ray")

from benchmarks import bench_ray_index as bench  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_benchmark_on_a_tiny_index_fills_every_table_with_finite_numbers(ray_cluster, tmp_path):
    import ray

    suite = bench.run(n_passages=2000, dim=64, repeats=5, budget_s=1.0, clients=2, calls_per_client=1,
                      work_dir=str(tmp_path))
    raw = suite["raw"]
    assert raw["errors"] == []
    assert list(raw["layouts"]) == [label for label, _, _ in bench.LAYOUTS]
    assert ray.is_initialized()  # the test's cluster is left running: the benchmark did not start it
    deadline = time.monotonic() + 20
    while True:  # every service it started is shut down (killing is asynchronous)
        left = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "rag_twin_bench"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == []

    tables = {t["title"].split(":")[0].split(" (")[0]: t for t in suite["tables"]}
    speed = tables["Queries/s and latency per call"]
    assert len(speed["rows"]) == len(bench.LAYOUTS) * len(bench.BATCHES) * 2  # sequential and concurrent
    for layout, batch, mode, *_ in speed["rows"]:
        assert layout in raw["layouts"] and batch in bench.BATCHES and mode.split(" ")[0] in ("sequential", "concurrent")
    for label, layout in raw["layouts"].items():
        for batch in bench.BATCHES:
            for mode in ("sequential", "concurrent"):
                timed = layout[f"{mode}_{batch}"]
                ratio = timed["ray"]["queries_per_s"] / timed["in process"]["queries_per_s"]
                assert _finite(ratio) and ratio > 0, (label, batch, mode)
                assert timed["ray"]["p50_s"] <= timed["ray"]["p99_s"]
        assert _finite(layout["load_s"]) and layout["load_s"] > 0

    memory = bench.memory_rows(raw)
    assert len(memory) == sum(s * r for _, s, r in bench.LAYOUTS)  # one row per actor
    for row in memory:
        for key in ("net_vs_in_process", "net_vs_file", "total_vs_single_actor"):
            assert _finite(row[key]), (row["layout"], key)
    assert len(tables["Memory per actor"]["rows"]) == len(memory)
    assert len(tables["Time to load"]["rows"]) == 1 + len(bench.LAYOUTS)
    assert [r[0] for r in tables["Overhead of a call at batch 8"]["rows"]] == list(raw["overhead"])

    verdicts = tables["Targets"]["rows"]
    kinds = {row[0].split(" ")[0] for row in verdicts}
    assert {"memory", "same,", "2", "overhead"} <= kinds
    assert all(row[-1] in ("met", "**missed**", "—") for row in verdicts)

    (case,) = suite["cases"]
    assert case["target"] == bench.TARGET_QPS and _finite(case["ratio"]) and case["met"] is (case["ratio"] >= 0.8)
    assert "2 flat shards" in case["name"] and "batch 64" in case["name"]


def test_wiki_dpr_sizing_on_paper():
    sizing = bench.wiki_dpr_sizing(actor_overhead_bytes=0.25 * 2**30)
    kinds = sizing["kinds"]
    assert kinds["flat"]["bytes_per_vector"] == 3072
    assert sizing["check_flat_gb"] == pytest.approx(64.6, abs=0.05)  # 21,015,300 x 768 float32
    assert kinds["ivfpq"]["bytes_per_vector"] == 128 + 8
    assert kinds["hnsw_sq8"]["bytes_per_vector"] == pytest.approx(768 + 4 * (256 + 128 / 127) + 12)
    # DPR's HNSWFlat (M 512 over 769 dims) comes out near the ~160 GB its authors report
    assert 140 < sizing["check_dpr_hnsw_flat_gb"] < 170
    flat = {r["shards"]: r for r in sizing["rows"] if r["kind"] == "flat"}
    assert flat[1]["shards_per_node"][64] == 0 and flat[1]["nodes"][64] is None  # 60 GiB does not fit 64 x 0.75
    assert flat[2]["memory_gib"] < flat[1]["memory_gib"] / 2 + 0.3  # halves, plus one actor's overhead
    for g in bench.NODE_GIB:
        per_node = [flat[s]["shards_per_node"][g] for s in bench.SHARD_COUNTS]
        assert per_node == sorted(per_node)  # smaller shards: more of them per node
        for s in bench.SHARD_COUNTS:
            if flat[s]["shards_per_node"][g]:
                assert flat[s]["nodes"][g] * flat[s]["shards_per_node"][g] >= s


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))
    assert bench.percentile(values, 50) == 50 and bench.percentile(values, 99) == 99
    assert bench.percentile([3.0, 1.0, 2.0], 99) == 3.0  # fewer than 100 values: the maximum

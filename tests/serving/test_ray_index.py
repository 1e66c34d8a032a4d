"""The index served by Ray actors, against the same index searched in-process.

Equality (ids, scores, vectors, passages, the retriever's context ids) for flat, HNSW and IVF-PQ
shards; replicas; a killed actor; a lost shard; a hot swap under concurrent queries; copies of
the client; bad settings.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from rag_core import RagRetriever
from rag_core.build_index import build_index
from rag_core.errors import IndexFormatError, IndexNotFoundError, IndexServiceError, MissingExtraError, ShardUnavailableError
from rag_core.index import CustomIndex, ShardedIndex
from rag_core.serving import RayIndex, RayIndexService
from tests.harness.configs import HIDDEN, tiny_rag_config
from tests.harness.passages import PASSAGES

ray = pytest.importorskip("ray")

N = 240


def _vectors(n, dim=HIDDEN, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _pairs(n, tag="v1"):
    return [(f"{tag} title {i}", f"{tag} passage number {i}") for i in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    vectors = _vectors(N)
    common = dict(embeddings=vectors, split=False, progress=False)
    return {
        "vectors": vectors,
        "single": build_index(_pairs(N), root / "single", **common),
        "flat3": build_index(_pairs(N), root / "flat3", shards=3, **common),
        "hnsw2": build_index(_pairs(N), root / "hnsw2", shards=2, index_kind="hnsw", hnsw_m=8, ef_construction=40, **common),
        "ivfpq2": build_index(_pairs(N), root / "ivfpq2", shards=2, index_kind="ivfpq", ivf_nlist=4, pq_m=4, **common),
        "v2": build_index(_pairs(N, "v2"), root / "v2", shards=3, embeddings=vectors[::-1].copy(), split=False, progress=False),
    }


@pytest.fixture
def service(ray_cluster, request):
    """Start services by `start(folder, **settings)`; all are shut down after the test."""
    started = []

    def start(folder, **settings):
        settings.setdefault("num_cpus", 0.5)
        settings.setdefault("name", f"test-{request.node.name[:40]}-{len(started)}")
        svc = RayIndexService.start(folder, **settings)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        try:
            svc.shutdown()
        except Exception:  # noqa: BLE001 - a test may have shut it down already
            pass


def _assert_same_search(served, local, queries, ks=(1, 5, 17, N + 3)):
    for k in ks:
        scores_s, ids_s = served.search(queries, k)
        scores_l, ids_l = local.search(queries, k)
        np.testing.assert_array_equal(ids_s, ids_l, err_msg=f"k={k}")
        np.testing.assert_allclose(scores_s, scores_l, rtol=1e-6, atol=1e-6, err_msg=f"k={k}")
        ids_g, embeds_g = served.get_top_docs(queries, k)
        ids_lg, embeds_lg = local.get_top_docs(queries, k)
        np.testing.assert_array_equal(ids_g, ids_lg)
        np.testing.assert_array_equal(embeds_g, embeds_lg)


@pytest.mark.parametrize("kind", ["flat3", "hnsw2", "ivfpq2"])
def test_served_shards_equal_in_process_search(folders, service, kind):
    queries = np.concatenate([_vectors(9, seed=3), folders["vectors"][[0, 79, 80, 239]]])
    svc = service(folders[kind], replicas=2 if kind == "flat3" else 1)
    served = svc.index()
    assert served.version == 1 and len(served) == N and served.vector_size == HIDDEN
    _assert_same_search(served, _loaded(ShardedIndex(HIDDEN, folders[kind])), queries)
    if kind == "flat3":  # flat shards equal one flat index over all passages
        # (up to N: past it, a single faiss index scores its empty slots -3.4e38, the merge -inf)
        _assert_same_search(served, _loaded(CustomIndex(HIDDEN, folders["single"])), queries, ks=(1, 5, 17, N))
        status = svc.status()
        assert sorted((s["shard"], s["replica"]) for s in status) == [(k, r) for k in range(3) for r in range(2)]
        assert all(s["peak_rss_bytes"] > 0 and s["load_seconds"] > 0 for s in status)
    dicts = served.get_doc_dicts(np.array([[0, 79, 80, 239, -1]]))
    assert dicts[0]["title"] == ["v1 title 0", "v1 title 79", "v1 title 80", "v1 title 239", ""]
    np.testing.assert_array_equal(dicts[0]["embeddings"][:4], folders["vectors"][[0, 79, 80, 239]])
    np.testing.assert_array_equal(dicts[0]["embeddings"][4], 0)


def _loaded(index):
    index.init_index()
    return index


def test_single_index_replicas_balance_concurrent_calls(folders, service):
    svc = service(folders["single"], replicas=2)
    served = svc.index()
    local = _loaded(CustomIndex(HIDDEN, folders["single"]))
    queries = _vectors(8, seed=4)
    expected = local.search(queries, 5)[1]
    failures = []

    def worker():
        for _ in range(15):
            got = served.search(queries, 5)[1]
            if not np.array_equal(got, expected):
                failures.append(got)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    calls = sorted(s["calls"] for s in svc.status())
    assert sum(calls) == 60 and calls[0] >= 15, calls  # both replicas served a fair share


def test_retriever_over_the_service_equals_in_process(folders, service, question_encoder_tokenizer, bart_tokenizer):
    from tests.harness.retrieval import QUESTIONS, tiny_question_ids

    vectors = _vectors(len(PASSAGES), seed=5)
    root = os.path.dirname(folders["single"])
    common = dict(embeddings=vectors, split=False, progress=False, generator_tokenizer=bart_tokenizer)
    sharded = build_index(PASSAGES, os.path.join(root, "retriever-kb"), shards=3, **common)
    config = tiny_rag_config("dpr", "bart", passages_path=sharded, max_combined_length=200)
    local = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer)
    svc = service(sharded, replicas=1)
    served = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer, index=svc.index())
    view = served._snapshot()[0]
    assert served._stored_ids_reader(view, served.contexts) is not None  # the actors' pre-tokenized passages are used
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:3])
    queries = _vectors(3, seed=6)
    for n_docs in (2, 5, len(PASSAGES)):
        a, b = local(question_ids, queries, n_docs=n_docs), served(question_ids, queries, n_docs=n_docs)
        for key in ("context_input_ids", "context_attention_mask", "doc_ids", "retrieved_doc_embeds"):
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    emb_a, ids_a, dicts_a = local.retrieve(queries, 4)
    emb_b, ids_b, dicts_b = served.retrieve(queries, 4)
    np.testing.assert_array_equal(ids_b, ids_a)
    np.testing.assert_array_equal(emb_b, emb_a)
    assert [d["title"] for d in dicts_b] == [d["title"] for d in dicts_a]
    assert [d["text"] for d in dicts_b] == [d["text"] for d in dicts_a]
    # from_pretrained with the served index in place of the one the config names
    local.save_pretrained(os.path.join(root, "retriever-folder"))
    loaded = RagRetriever.from_pretrained(os.path.join(root, "retriever-folder"), index=RayIndex(svc.name))
    assert isinstance(loaded.index, RayIndex)
    np.testing.assert_array_equal(loaded(question_ids, queries, n_docs=5)["context_input_ids"],
                                  local(question_ids, queries, n_docs=5)["context_input_ids"])
    # copies carry the service's name, not its actors, and reconnect on first use
    for copied in (pickle.loads(pickle.dumps(served)), copy.deepcopy(served)):
        assert isinstance(copied.index, RayIndex)
        np.testing.assert_array_equal(copied(question_ids, queries, n_docs=5)["context_input_ids"],
                                      local(question_ids, queries, n_docs=5)["context_input_ids"])


def test_killed_replica_is_retried_then_restarted(folders, service):
    svc = service(folders["flat3"], replicas=2, max_restarts=2)
    served = svc.index(timeout_s=30)
    local = _loaded(ShardedIndex(HIDDEN, folders["flat3"]))
    queries = _vectors(6, seed=7)
    expected = local.search(queries, 8)[1]
    victim = svc.actors()[1][0]
    old_pid = ray.get(victim.info.remote())["pid"]
    answers, errors, stop = [], [], threading.Event()

    def worker():
        while not stop.is_set():
            try:
                answers.append(served.search(queries, 8)[1])
            except Exception as err:  # noqa: BLE001 - recorded, asserted below
                errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    ray.kill(victim, no_restart=False)  # dies mid-run; Ray restarts it
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(answers) > 10 and all(np.array_equal(a, expected) for a in answers)
    deadline = time.time() + 60
    while True:  # the restarted actor loads its shard again and serves
        try:
            info = ray.get(victim.info.remote(), timeout=10)
            break
        except Exception:  # noqa: BLE001 - still restarting
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    assert info["pid"] != old_pid and info["shard"] == 1
    np.testing.assert_array_equal(served.search(queries, 8)[1], expected)


def test_lost_shard_without_replica_is_named(folders, service):
    svc = service(folders["flat3"], replicas=1, max_restarts=0)
    served = svc.index(timeout_s=10)
    queries = _vectors(2, seed=8)
    served.search(queries, 3)
    ray.kill(svc.actors()[2][0], no_restart=True)
    with pytest.raises(ShardUnavailableError, match=r"shard 2 \(ids \[160, 240\)") as caught:
        served.search(queries, 3)
    assert "no replica answered" in str(caught.value) and svc.name in str(caught.value)


def test_hot_swap_under_concurrent_queries_loses_nothing_and_never_mixes(folders, service, question_encoder_tokenizer, bart_tokenizer):
    from tests.harness.retrieval import QUESTIONS, tiny_question_ids

    svc = service(folders["flat3"], replicas=1)
    config = tiny_rag_config("dpr", "bart", passages_path=folders["flat3"], n_docs=6, max_combined_length=64)
    retriever = RagRetriever(config, question_encoder_tokenizer, bart_tokenizer, index=svc.index())
    question_ids = tiny_question_ids(question_encoder_tokenizer, QUESTIONS[:4])
    queries = _vectors(4, seed=9)
    results, errors, stop = [], [], threading.Event()

    def worker():
        while not stop.is_set():
            try:
                started = time.perf_counter()
                out = retriever(question_ids, queries)
                texts = bart_tokenizer.batch_decode(out["context_input_ids"], skip_special_tokens=True)
                results.append((started, [t.split()[0] for t in texts]))
                started = time.perf_counter()
                _, _, dicts = retriever.retrieve(queries, 6)
                results.append((started, [t.split()[0] for d in dicts for t in d["title"]]))
            except Exception as err:  # noqa: BLE001 - recorded, asserted below
                errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    version = svc.swap(folders["v2"], drain_s=0.5)
    swapped_at = time.perf_counter()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert version == 2 and svc.version == 2
    assert not errors, errors[:3]
    tags = []
    for started, call_tags in results:
        assert len(set(call_tags)) == 1, call_tags  # every passage of one call from one version
        tags.append((started, call_tags[0]))
    assert {tag for _, tag in tags} == {"v1", "v2"}
    assert all(tag == "v2" for started, tag in tags if started > swapped_at)  # calls begun after the swap: new version
    # the old actors are gone after the drain; the new ones answer
    time.sleep(1.0)
    assert ray.get(svc._directory.describe.remote())["versions"].keys() == {2}
    assert retriever.retrieve(queries, 2)[2][0]["title"][0].startswith("v2")


def test_start_joins_a_running_service_and_refuses_other_settings(folders, service):
    svc = service(folders["flat3"], name="join-me")
    again = RayIndexService.start(folders["flat3"], name="join-me", num_cpus=0.5)  # the same settings: joined
    assert again.actors()[0][0]._actor_id == svc.actors()[0][0]._actor_id
    with pytest.raises(IndexServiceError, match=r"already runs version 1 with other settings \(folder: running"):
        RayIndexService.start(folders["single"], name="join-me", num_cpus=0.5)
    with pytest.raises(IndexServiceError, match="replicas: running 1, asked 2"):
        RayIndexService.start(folders["flat3"], name="join-me", num_cpus=0.5, replicas=2)
    connected = RayIndexService.connect("join-me")
    assert connected.version == 1


def test_processes_starting_one_service_at_once_start_it_once(folders, ray_cluster):
    """Three processes (as the ranks of a job) call `start` at the same moment: one version, the same actors."""
    code = (
        "import json, sys\n"
        "from rag_core.serving import RayIndexService\n"
        "svc = RayIndexService.start(sys.argv[1], name='race', num_cpus=0.5, replicas=2, address=sys.argv[2])\n"
        "print('ACTORS', svc.version, json.dumps(sorted(a._actor_id.hex() for r in svc.actors() for a in r)))\n"
    )
    env = dict(os.environ, RAY_ADDRESS=ray_cluster)
    procs = [subprocess.Popen([sys.executable, "-c", code, folders["flat3"], ray_cluster], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
        lines = [next(line for line in out.splitlines() if line.startswith("ACTORS")) for out, _ in outputs]
        assert len(set(lines)) == 1 and lines[0].startswith("ACTORS 1 "), lines
        assert len(json.loads(lines[0].split(" ", 2)[2])) == 6  # 3 shards x 2 replicas, started once
    finally:
        RayIndexService.connect("race").shutdown()


def test_bad_settings_and_missing_services_are_named(folders, ray_cluster, tmp_path):
    with pytest.raises(IndexServiceError, match="replicas must be a positive integer, got 0"):
        RayIndexService.start(folders["flat3"], name="bad", replicas=0)
    with pytest.raises(IndexServiceError, match="strategy must be one of"):
        RayIndexService.start(folders["flat3"], name="bad", strategy="EVERYWHERE")
    with pytest.raises(IndexNotFoundError, match="does not exist"):
        RayIndexService.start(tmp_path / "nowhere", name="bad")
    with pytest.raises(IndexFormatError, match="neither a `build_index` folder"):
        RayIndexService.start(tmp_path, name="bad")
    with pytest.raises(IndexServiceError, match=r"'no-such-service' in namespace 'rag_twin' does not exist"):
        RayIndex("no-such-service", connect_timeout_s=0.5).init_index()
    with pytest.raises(IndexServiceError, match="could not reserve 1 actors"):
        RayIndexService.start(folders["single"], name="too-big", num_cpus=64, load_timeout_s=2)


def test_without_ray_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from rag_core.serving import RayIndex\n"
        "from rag_core.errors import MissingExtraError\n"
        "try:\n"
        "    RayIndex('x').init_index()\n"
        "except MissingExtraError as err:\n"
        "    print('MISSING', err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MISSING" in out.stdout and "pip install 'rag-twin[ray]'" in out.stdout
    assert issubclass(MissingExtraError, ImportError)

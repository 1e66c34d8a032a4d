"""The demo's command lines (`demo.pipeline`): which fine-tuning runs it starts and what each evaluates.

No training here: the command lines and data files only (the quick demo test runs them)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pycountry")

from demo.common import Settings  # noqa: E402
from demo.knowledge import build_knowledge  # noqa: E402
from demo.pipeline import make_jobs, plan_tasks, write_data  # noqa: E402

INDEXES = {name: f"/indexes/{name}" for name in ("real", "counterfactual", "training_world", "null")}


@pytest.fixture(scope="module")
def kb():
    return build_knowledge(quick=True, seed=0)


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_training_files_repeat_code_questions_and_keep_dev_and_test_as_they_are(kb, tmp_path):
    files = write_data(kb, str(tmp_path), code_repeats=3)
    train = [json.loads(line) for line in open(files["train"], encoding="utf-8")]
    world = [json.loads(line) for line in open(files["train_world"], encoding="utf-8")]
    codes = sum(q.kind == "code" for q in kb.train)
    assert len(train) == len(world) == len(kb.train) + 2 * codes
    assert [r["question"] for r in train] == [r["question"] for r in world]
    first_code = next(q for q in kb.train if q.kind == "code")
    assert sum(r["question"] == first_code.question for r in train) == 3
    assert sum(1 for _ in open(files["dev"], encoding="utf-8")) == len(kb.dev)
    assert sum(1 for _ in open(files["test"], encoding="utf-8")) == len(kb.test)


def test_one_passage_per_training_question_trains_rag_token_and_rag_sequence_once(kb, tmp_path):
    settings = Settings(quick=True, train_n_docs=1)
    data = write_data(kb, str(tmp_path / "data"))
    jobs = make_jobs(settings, data, INDEXES, "/init", str(tmp_path / "runs"))
    assert [j.name for j in jobs] == ["rag_token", "baseline"]
    rag = jobs[0]
    assert rag.reports == ("rag_token", "rag_sequence")
    assert _flag(rag.finetune, "--n_docs") == "1" and _flag(rag.finetune, "--model_type") == "rag_token"
    checkpoint = str(tmp_path / "runs" / "rag_token" / "checkpoints" / "last")
    for key in ("rag_sequence dev", "rag_sequence test", "rag_sequence hot_swap"):
        argv = rag.evaluate[key]
        assert _flag(argv, "--model_type") == "rag_sequence" and _flag(argv, "--model_name_or_path") == checkpoint
        assert _flag(argv, "--eval_n_docs") == str(settings.n_docs)
        assert _flag(argv, "--predictions_path").startswith(str(tmp_path / "runs" / "rag_sequence"))
    assert _flag(rag.evaluate["rag_sequence hot_swap"], "--index_path") == INDEXES["counterfactual"]
    assert _flag(rag.evaluate["test"], "--model_type") == "rag_token"


def test_several_passages_per_training_question_train_each_rag_model(kb, tmp_path):
    settings = Settings(quick=True, train_n_docs=2)
    data = write_data(kb, str(tmp_path / "data"))
    jobs = make_jobs(settings, data, INDEXES, "/init", str(tmp_path / "runs"))
    assert [j.name for j in jobs] == ["rag_token", "rag_sequence", "baseline"]
    assert all(j.reports == (j.name,) for j in jobs)
    assert [_flag(j.finetune, "--n_docs") for j in jobs] == ["2", "2", "1"]
    assert _flag(jobs[1].finetune, "--model_type") == "rag_sequence"
    assert not any(" " in key for j in jobs for key in j.evaluate)


def test_task_plan_starts_what_needs_no_pending_index_and_waits_for_what_does(kb, tmp_path):
    settings = Settings(quick=True, train_n_docs=1)
    data = write_data(kb, str(tmp_path / "data"))
    jobs = make_jobs(settings, data, INDEXES, "/init", str(tmp_path / "runs"))
    pending = {INDEXES[name]: (name.replace("_", " "), [], "/cache", name) for name in ("real", "counterfactual", "training_world")}
    tasks = plan_tasks(jobs, pending)
    by_name = {t.name: t for t in tasks}
    assert len(by_name) == len(tasks) == 3 + 2 + sum(len(j.evaluate) for j in jobs)
    # the generator-only run needs no pending index: the first task that can start
    assert [t.name for t in tasks if not t.needs][0] == "Generator only: fine-tune"
    rag = by_name["RAG-Token + RAG-Sequence: fine-tune"]
    assert rag.needs == {"index: real", "index: training world"}
    swap = by_name["RAG-Token + RAG-Sequence: evaluate rag_sequence hot_swap"]
    assert swap.needs == {rag.name, "index: counterfactual"}
    assert by_name["Generator only: evaluate recall_real"].needs == {"index: real"}
    assert by_name["Generator only: evaluate test"].needs == {"Generator only: fine-tune"}

"""Data files (formats, malformed lines named by file and line), the shared options, the run folder,
the learning-rate schedule, best-k bookkeeping and the batch stream. No framework."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rag_core import OutputExistsError, ResumeError, TrainingDataError
from rag_core.training import cli, run as runs
from rag_core.training.data import (
    Columns, QAExample, batch_indices, micro_batches, read_examples, read_gold_titles, split_file,
)

WANT = [QAExample("who wrote hamlet?", ("William Shakespeare", "Shakespeare"), ("Hamlet",)),
        QAExample("capital of france", ("Paris",), ())]


def test_jsonl_csv_tsv_and_source_target_read_the_same(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"question": "who wrote hamlet?", "answers": ["William Shakespeare", "Shakespeare"], "titles": ["Hamlet"]}\n'
        '\n{"question": "capital of france", "answers": "Paris"}\n')
    (tmp_path / "a.csv").write_text('question,answers,titles\n"who wrote hamlet?",William Shakespeare|Shakespeare,'
                                    'Hamlet\ncapital of france,Paris,\n')
    (tmp_path / "a.tsv").write_text("q\ta\ttitles\nwho wrote hamlet?\tWilliam Shakespeare | Shakespeare\tHamlet\n"
                                    "capital of france\tParis\t\n")
    (tmp_path / "train.source").write_text("who wrote hamlet?\ncapital of france\n")
    (tmp_path / "train.target").write_text("William Shakespeare|Shakespeare\nParis\n")
    assert read_examples(tmp_path / "a.jsonl") == WANT
    assert read_examples(tmp_path / "a.csv") == WANT
    assert read_examples(tmp_path / "a.tsv", Columns(question="q", answers="a")) == WANT
    assert read_examples(tmp_path / "train.source") == [WANT[0].__class__(e.question, e.answers) for e in WANT]
    assert split_file(str(tmp_path), "train") == str(tmp_path / "train.source")


@pytest.mark.parametrize("name, text, where, what", [
    ("bad.jsonl", '{"question": "a", "answers": ["b"]}\n\n{"question": "c", "answers": ["d"]\n', "line 3", "not valid JSON"),
    ("bad.jsonl", '{"question": "a", "answers": ["b"]}\n{"question": "c"}\n', "line 2", "no 'answers' field"),
    ("bad.jsonl", '{"question": "", "answers": ["b"]}\n', "line 1", "non-empty string"),
    ("bad.jsonl", '{"question": "a", "answers": [1.5]}\n', "line 1", "a string or a list of strings"),
    ("bad.jsonl", '["a", "b"]\n', "line 1", "expected a JSON object"),
    ("bad.csv", "question,answers\na,b\nc,d,e\n", "line 3", "3 fields, but the header has 2"),
    ("bad.csv", 'question,answers\na,b\n"multi\nline",x\nc,\n', "line 5", "no answers"),
    ("bad.csv", "question,answer\na,b\n", "line 1", "lacks the column(s) ['answers']"),
    ("bad.tsv", "question\tanswers\na\tb\n\tc\n", "line 3", "non-empty string"),
])
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, name, text, where, what):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TrainingDataError) as info:
        read_examples(path)
    message = str(info.value)
    assert repr(str(path)) in message and where in message and what in message


def test_source_target_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "val.source").write_text("q1\nq2\nq3\n")
    (tmp_path / "val.target").write_text("a1\na2\n")
    with pytest.raises(TrainingDataError, match=r"val\.target' line 3: .* has 3 lines but .* has 2"):
        read_examples(tmp_path / "val.source")
    (tmp_path / "val.target").write_text("a1\n \na3\n")
    with pytest.raises(TrainingDataError, match=r"val\.target' line 2: answers are empty"):
        read_examples(tmp_path / "val.source")
    (tmp_path / "gold.tsv").write_text("who?\tParis\tFrance\nno titles here\n")
    with pytest.raises(TrainingDataError, match=r"gold\.tsv' line 2"):
        read_gold_titles(tmp_path / "gold.tsv")
    with pytest.raises(TrainingDataError, match="unknown data format 'xml'"):
        (tmp_path / "a.xml").write_text("<a/>")
        read_examples(tmp_path / "a.xml")


def test_one_parser_for_both_frameworks():
    argv = ["--model_name_or_path", "m", "--data_dir", "d", "--output_dir", "o", "--max_steps", "5"]
    args = cli.parse_finetune_args(argv, "x")
    assert (args.model_type, args.save_total_limit, args.lr_scheduler, args.question_column) == \
        ("rag_token", 3, "linear", "question")
    with pytest.raises(SystemExit):
        cli.parse_finetune_args(argv + ["--generator_name_or_path", "g"], "x")  # a checkpoint OR a pair
    with pytest.raises(SystemExit):
        cli.parse_finetune_args(argv + ["--gradient_accumulation_steps", "0"], "x")
    with pytest.raises(SystemExit):
        cli.parse_evaluate_args(["--model_name_or_path", "m", "--gold_data_path", "g"], "x")  # e2e with gold titles
    with pytest.raises(SystemExit):
        cli.parse_finetune_args(argv + ["--cache_retrieval"], "x")  # only a frozen encoder retrieves the same passages
    with pytest.raises(SystemExit):
        cli.parse_finetune_args(argv + ["--extra_train_file", "f", "--extra_index_path", "i"], "x")  # needs the cache
    cached = cli.parse_finetune_args(argv + ["--freeze_question_encoder", "--cache_retrieval", "--extra_train_file", "f",
                                             "--extra_index_path", "i"], "x")
    assert cached.cache_retrieval and cached.extra_index_path == "i"


def test_run_folder_refuses_resumes_and_overwrites(tmp_path):
    folder = runs.RunFolder(tmp_path / "run")
    args = {"learning_rate": 0.1, "max_steps": 4}
    assert folder.prepare(args, resume=False, overwrite=False) is None
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == args
    with pytest.raises(OutputExistsError, match="already holds a run"):
        folder.prepare(args, resume=False, overwrite=False)
    with pytest.raises(ResumeError, match="no resumable checkpoint"):
        folder.prepare(args, resume=True, overwrite=False)
    state = runs.TrainState(global_step=2, epoch=1, batches_in_epoch=1)
    folder.save_checkpoint(folder.last, lambda tmp: open(os.path.join(tmp, "weights"), "w").close(), state)
    assert folder.prepare({**args, "max_steps": 8}, resume=True, overwrite=False) == state  # longer: allowed
    with pytest.raises(ResumeError, match=r"--learning_rate 0\.1 -> 0\.2"):
        folder.prepare({**args, "learning_rate": 0.2}, resume=True, overwrite=False)
    folder.prepare(args, resume=False, overwrite=True)
    assert os.listdir(tmp_path / "run" / "checkpoints") == []


def test_schedule_best_k_and_early_stopping():
    # linear: warmup 2 of 6 steps, then down to 0 at step 6
    np.testing.assert_allclose([runs.lr_factor(s, 2, 6, "linear") for s in range(7)],
                               [0, 0.5, 1, 0.75, 0.5, 0.25, 0])
    np.testing.assert_allclose([runs.lr_factor(s, 2, 6, "constant") for s in range(4)], [0, 0.5, 1, 1])
    # constant until half the steps, then linear decay to 20% of the rate
    np.testing.assert_allclose([runs.lr_factor(s, 1, 10, "linear", decay_start=0.5, min_ratio=0.2) for s in range(11)],
                               [0, 1, 1, 1, 1, 1, 0.84, 0.68, 0.52, 0.36, 0.2])
    assert runs.total_steps(-1, 2.5, batches_per_epoch=5, accumulation=2) == 8  # ceil(2.5 * ceil(5 / 2))
    state = runs.TrainState()
    kept = [state.keep_best(step, em, f"s{step}", limit=2) for step, em in [(1, 0.2), (2, 0.5), (3, 0.2), (4, 0.6)]]
    assert kept == [(True, []), (True, []), (False, []), (True, ["s1"])]
    assert [e["step"] for e in state.best] == [4, 2]
    state = runs.TrainState()
    assert [state.record_eval(em, patience=2) for em in (0.1, 0.3, 0.3, 0.2)] == [False, False, False, True]


def test_batch_stream_resumes_where_it_stopped():
    whole = [b for _, b in zip(range(7), micro_batches(10, 3, seed=5))]
    stopped = whole[3]
    resumed = [b for _, b in zip(range(3), micro_batches(10, 3, seed=5, epoch=stopped.next_epoch,
                                                          position=stopped.next_position))]
    assert [b.indices.tolist() for b in resumed] == [b.indices.tolist() for b in whole[4:]]
    assert [len(b.indices) for b in whole] == [3, 3, 3, 1, 3, 3, 3] and whole[3].ends_epoch
    assert sorted(np.concatenate([b.indices for b in whole[:4]]).tolist()) == list(range(10))
    # two processes share each batch of 2 * 3 examples
    parts = [batch_indices(10, 3, seed=5, epoch=0, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(np.concatenate(parts[0] + parts[1]).tolist()) == list(range(10))

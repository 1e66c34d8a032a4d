"""The demo as a user of the library's commands: data files, command lines, and reading their outputs.

Framework-neutral (no torch, no tensorflow): `experiment_pt` and `experiment_tf` build the initial
checkpoint in their framework and run the jobs made here through `rag_pt.finetune` /
`rag_tf.finetune` and `rag_pt.evaluate` / `rag_tf.evaluate`, called as Python functions with the
command-line arguments a user would type (`main(argv)`).

Each model is one fine-tuning run and a few evaluate runs:

- RAG-Token and RAG-Sequence: `--train_file` (the training questions, real answers) against the
  real index, plus `--extra_train_file` (the same questions with the training world's answers)
  against the training world's index (counterfactual augmentation); the question encoder is
  frozen and each question's retrieval is stored once (`--freeze_question_encoder
  --cache_retrieval`). Validation on the development questions at the last step
  (`--eval_steps` = `--max_steps`). Then the test questions, once, against the real index and
  against the hot swap's counterfactual index (the same weights, `--index_path` of another world).
  With one passage per question in training (`Settings.train_n_docs == 1`) the RAG-Token and
  RAG-Sequence losses are the same function (one passage: nothing to marginalise over), so two
  runs would train the same weights: one fine-tuning run (`--model_type rag_token`) serves both,
  and the evaluate command answers with its checkpoint as RAG-Token and as RAG-Sequence
  (`--model_type`), each marginalising over `Settings.n_docs` passages in its own way; the
  RAG-Sequence answers to the development questions come from an evaluate run too.
- Generator only: the same command, the same initial weights, steps and batch size, with an index of
  one empty passage (`null` index, one passage per question): every question gets the same
  passage, so the generator answers from the question alone. Trained on the real answers only (a
  training world it cannot see would only teach it to contradict itself).
- Retrieval recall@k of the test questions, real and counterfactual index (`--eval_mode retrieval`,
  gold passage ids).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from .common import Settings, exact_match, normalize_answer
from .knowledge import KnowledgeBase, Question, Region

MODEL_LABELS = {"rag_token": "RAG-Token", "rag_sequence": "RAG-Sequence", "baseline": "Generator only"}
# the null index's one passage: no information, only a place for the question in the context
NULL_PASSAGE = {"title": "", "text": "-"}


# === Data files ===
def _record(q: Question, world: list[Region], kb: KnowledgeBase) -> dict:
    return {"question": q.question, "answers": [kb.answer_in(world, q)], "titles": [str(q.region)]}


def write_jsonl(path: str, records) -> str:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_data(kb: KnowledgeBase, folder: str, code_repeats: int = 1) -> dict:
    """The question files of the run (JSON lines: question, answers, gold passage id as `titles`);
    in the training files each code question `code_repeats` times, in place."""
    os.makedirs(folder, exist_ok=True)
    train = [q for q in kb.train for _ in range(code_repeats if q.kind == "code" else 1)]
    files = {
        "train": [_record(q, kb.regions, kb) for q in train],
        "train_world": [_record(q, kb.training_world, kb) for q in train],
        "dev": [_record(q, kb.regions, kb) for q in kb.dev],
        "test": [_record(q, kb.regions, kb) for q in kb.test],
        "test_counterfactual": [_record(q, kb.counterfactual, kb) for q in kb.test],
    }
    return {name: write_jsonl(os.path.join(folder, f"{name}.jsonl"), rows) for name, rows in files.items()}


# === Jobs ===
@dataclass
class Job:
    """One fine-tuning run and the evaluate command lines that follow it.

    `reports`: the models whose results the job writes (`<runs>/<model>/`): its own, and with a
    shared RAG run also the other RAG model, answered with the same checkpoint."""

    name: str
    run_dir: str
    finetune: list
    evaluate: dict = field(default_factory=dict)  # output name -> argv
    reports: tuple = ()

    def __post_init__(self):
        self.reports = tuple(self.reports) or (self.name,)

    @property
    def log(self) -> str:
        return os.path.join(self.run_dir, "demo.log")

    @property
    def label(self) -> str:
        return " + ".join(MODEL_LABELS[m] for m in self.reports)


def shares_rag_run(settings: Settings) -> bool:
    """One passage per training question: RAG-Token and RAG-Sequence train the same weights."""
    return settings.train_n_docs == 1


def _common(settings: Settings) -> list:
    return ["--max_target_length", str(settings.max_answer_tokens), "--eval_batch_size", str(settings.eval_batch_size),
            "--num_beams", "1", "--no_progress"]


def make_jobs(settings: Settings, data: dict, indexes: dict, init: str, runs_dir: str,
              retrieval_cache: Optional[str] = None) -> list[Job]:
    """The fine-tune and evaluate command lines of every model in `settings.models` (see the module
    docstring); with `settings.dev_only`, fine-tuning and its validation on the development questions only."""
    jobs = []
    rag_models = [m for m in settings.models if m != "baseline"]
    for name in settings.models:
        baseline = name == "baseline"
        if not baseline and shares_rag_run(settings) and name != rag_models[0]:
            continue  # answered by the first RAG model's run, with its checkpoint
        run_dir = os.path.join(runs_dir, name)
        index = indexes["null"] if baseline else indexes["real"]
        n_docs, eval_n_docs = (1, 1) if baseline else (settings.train_n_docs, settings.n_docs)
        argv = [
            "--model_name_or_path", init, "--model_type", "rag_token" if baseline else name,
            "--index_path", index, "--train_file", data["train"], "--validation_file", data["dev"],
            "--output_dir", run_dir, "--overwrite",
            "--freeze_question_encoder", "--cache_retrieval",
            "--n_docs", str(n_docs), "--eval_n_docs", str(eval_n_docs),
            "--max_steps", str(settings.train_steps), "--train_batch_size", str(settings.batch_size),
            "--learning_rate", str(settings.learning_rate), "--weight_decay", str(settings.weight_decay),
            "--warmup_steps", str(settings.warmup_steps), "--lr_decay_start", str(settings.decay_from),
            "--min_lr_ratio", str(settings.min_lr_ratio), "--max_grad_norm", "1.0",
            "--eval_steps", str(settings.eval_every or settings.train_steps), "--save_total_limit", "1",
            "--logging_steps", str(settings.logging_steps), "--seed", str(settings.seed), *_common(settings),
        ]
        if retrieval_cache is not None:
            argv += ["--retrieval_cache_dir", retrieval_cache]
        if settings.augment and not baseline:
            argv += ["--extra_train_file", data["train_world"], "--extra_index_path", indexes["training_world"]]
        checkpoint = os.path.join(run_dir, "checkpoints", "last")
        reports = rag_models if not baseline and shares_rag_run(settings) else [name]
        job = Job(name, run_dir, argv, reports=reports)

        def evaluate(model: str, out: str, eval_file: str, index_path: str) -> None:
            model_dir = os.path.join(runs_dir, model)
            key = out if model == name else f"{model} {out}"
            job.evaluate[key] = [
                "--model_name_or_path", checkpoint, "--model_type", "rag_token" if baseline else model,
                "--index_path", index_path, "--eval_file", eval_file, "--eval_n_docs", str(eval_n_docs),
                "--predictions_path", os.path.join(model_dir, f"{out}.jsonl"),
                "--metrics_path", os.path.join(model_dir, f"{out}-metrics.json"), *_common(settings),
            ]

        for model in reports:
            if model != name:  # the fine-tuning run validated as `name` only
                evaluate(model, "dev", data["dev"], index)
            if not settings.dev_only:
                evaluate(model, "test", data["test"], index)
                if not baseline:
                    evaluate(model, "hot_swap", data["test_counterfactual"], indexes["counterfactual"])
        jobs.append(job)
    if settings.dev_only:
        return jobs
    # retrieval recall@k of the test questions (the frozen encoder: the same for every model), by the
    # job that ends first (the generator-only one)
    recall_job = next((j for j in jobs if j.name == "baseline"), jobs[-1])
    k = str(max(settings.recall_k))
    for world in ("real", "counterfactual"):
        test = data["test"] if world == "real" else data["test_counterfactual"]
        recall_job.evaluate[f"recall_{world}"] = [
            "--model_name_or_path", init, "--index_path", indexes[world], "--eval_file", test, "--eval_mode",
            "retrieval", "--gold_key", "id", "--k", k, "--eval_batch_size", "256", "--no_progress",
            "--predictions_path", os.path.join(recall_job.run_dir, f"recall_{world}.jsonl"),
        ]
    return jobs


def run_job(job: Job, finetune_main, evaluate_main) -> dict:
    """Fine-tune, then evaluate; the commands' own output goes to `<run_dir>/demo.log`.

    Returns the wall-clock and CPU seconds of each part."""
    import contextlib
    import sys

    for model in job.reports:
        os.makedirs(os.path.join(os.path.dirname(job.run_dir), model), exist_ok=True)
    times = {}
    with open(job.log, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        for part, argv, main in [("fine-tune", job.finetune, finetune_main)] + [
            (f"evaluate {name}", argv, evaluate_main) for name, argv in job.evaluate.items()
        ]:
            start, cpu = time.perf_counter(), time.process_time()
            status = main(list(argv))
            times[part] = (time.perf_counter() - start, time.process_time() - cpu)
            log.flush()
            if status != 0:
                sys.stderr.flush()
                raise RuntimeError(f"{job.label}: {part} exited with {status}; see {job.log}:\n"
                                   + log_tail(job.log))
    return times


def log_tail(path: str, lines: int = 30) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


# === A schedule of tasks (the PyTorch run) ===
@dataclass
class Task:
    """One step of a run: an index to build (`kind` "index", `args` = (passages, cache_dir, cache name))
    or one command of a job (`kind` "finetune" / "evaluate", `args` = (argv,)). `needs`: the names of
    the tasks that must end first. Commands write their output to `log`."""

    name: str
    kind: str
    args: tuple
    needs: frozenset = frozenset()
    log: Optional[str] = None


def plan_tasks(jobs: list[Job], pending_indexes: dict) -> list[Task]:
    """The run as tasks, in the order to start them when several are ready.

    `pending_indexes`: `{folder: (label, passages, cache_dir, cache name)}`, the indexes not built yet.
    A command needs every pending index its command line names, and an evaluation of a fine-tuned
    checkpoint needs that fine-tuning. Order: the fine-tuning runs (the jobs' order), the indexes a
    fine-tuning run needs, the other indexes, then the evaluations. So a run that needs no pending
    index (the generator-only one, over its one-passage index) starts at once, beside the first
    index build, and encodes the training questions for the retrieval store first: the RAG run,
    started once its indexes exist, finds their vectors stored instead of waiting for them."""

    def index_needs(argv) -> frozenset:
        return frozenset(f"index: {pending_indexes[a][0]}" for a in argv if a in pending_indexes)

    finetunes, evaluations = [], []
    for job in jobs:
        finetune_name = f"{job.label}: fine-tune"
        finetunes.append(Task(finetune_name, "finetune", (job.finetune,), index_needs(job.finetune),
                              os.path.join(job.run_dir, "fine-tune.log")))
        for out, argv in job.evaluate.items():
            needs = index_needs(argv) | (frozenset() if out.startswith("recall_") else {finetune_name})
            part = f"evaluate {out}"
            evaluations.append(Task(f"{job.label}: {part}", "evaluate", (argv,), needs,
                                    os.path.join(job.run_dir, f"{part.replace(' ', '-')}.log")))
    needed_first = set().union(*(t.needs for t in finetunes)) if finetunes else set()
    indexes = [Task(f"index: {label}", "index", (passages, cache_dir, cache_name))
               for label, passages, cache_dir, cache_name in pending_indexes.values()]
    first = [t for t in indexes if t.name in needed_first]
    later = [t for t in indexes if t.name not in needed_first]
    return finetunes + first + later + evaluations


# === Progress ===
class Progress:
    """A bar per fine-tuning run, fed from its `metrics.jsonl` (the runs log every `--logging_steps`)."""

    def __init__(self, jobs: list[Job], steps: int, enabled: bool):
        from tqdm.auto import tqdm

        self.jobs, self.enabled = jobs, enabled
        self.bars = {
            j.name: tqdm(total=steps, desc=f"train {j.label:<14}", unit="step", position=i,
                         disable=not enabled, dynamic_ncols=True)
            for i, j in enumerate(jobs)
        }

    def poll(self) -> None:
        if not self.enabled:
            return
        for job in self.jobs:
            path = os.path.join(job.run_dir, "metrics.jsonl")
            if not os.path.isfile(path):
                continue
            try:
                records = [r for r in read_jsonl(path) if "loss" in r]
            except ValueError:  # a line being written
                continue
            if records:
                bar = self.bars[job.name]
                bar.update(records[-1]["step"] - bar.n)
                bar.set_postfix(loss=f"{records[-1]['loss']:.3f}", refresh=False)

    def close(self) -> None:
        self.poll()
        for bar in self.bars.values():
            bar.close()


# === Scores ===
def sample_indices(questions: list[Question]) -> list[int]:
    """The first test country question and the first test code question (fixed by the seed)."""
    picks = []
    for kind in ("country", "code"):
        picks += [i for i, q in enumerate(questions) if q.kind == kind][:1]
    return picks


def score_records(questions: list[Question], records: list[dict], answers: list[str], world: Optional[list[Region]]) -> dict:
    """Exact match (case and punctuation count; the library's SQuAD-normalised EM beside it) overall
    and per question kind, and two sample questions with their top passage (from the provenance)."""
    if [r["question"] for r in records] != [q.question for q in questions]:
        raise RuntimeError("the predictions do not follow the questions")
    predictions = [r["answer"] for r in records]
    by_kind = {}
    for kind in ("country", "code"):
        sel = [i for i, q in enumerate(questions) if q.kind == kind]
        by_kind[kind] = exact_match([predictions[i] for i in sel], [answers[i] for i in sel])
    samples = []
    for i in sample_indices(questions):
        ids = records[i].get("doc_ids") or []
        top = world[ids[0]].text if world is not None and ids and ids[0] >= 0 else None
        samples.append({"question": questions[i].question, "prediction": normalize_answer(predictions[i]),
                        "answer": answers[i], "top_passage": top})
    return {
        "em": exact_match(predictions, answers),
        "em_squad": sum(r["em"] for r in records) / len(records) if records and records[0].get("em") is not None else None,
        "em_by_kind": by_kind,
        "samples": samples,
        "predictions": [normalize_answer(p) for p in predictions],
    }


def recall_from(records: list[dict], ks) -> dict:
    """recall@k: the share of questions whose own region's passage is among the top k retrieved."""
    return {k: sum(r["gold"][0] in [str(i) for i in r["doc_ids"][:k]] for r in records) / len(records) for k in ks}


def _outputs(job: Job, model: str) -> set:
    """The evaluate outputs ("test", "hot_swap", ...) that `job` writes for `model`."""
    if model == job.name:
        return {key for key in job.evaluate if " " not in key}
    return {key.split(" ", 1)[1] for key in job.evaluate if key.startswith(f"{model} ")}


def collect(kb: KnowledgeBase, settings: Settings, jobs: list[Job]) -> dict:
    """The results of finished jobs: dev EM (the run's validation at its last step), test EM, the hot
    swap, recall@k and each run's loss curve."""
    results: dict = {"models": {}, "hot_swap": {}, "recall": {}}
    real = [kb.answer_in(kb.regions, q) for q in kb.test]
    moved = [kb.answer_in(kb.counterfactual, q) for q in kb.test]
    dev_answers = [kb.answer_in(kb.regions, q) for q in kb.dev]
    for job in jobs:
        world = None if job.name == "baseline" else kb.regions
        metrics = read_jsonl(os.path.join(job.run_dir, "metrics.jsonl"))
        for name in job.reports:
            model_dir = os.path.join(os.path.dirname(job.run_dir), name)
            own = name == job.name  # validated by the fine-tuning run itself, else by an evaluate run
            dev_file = os.path.join(job.run_dir, "predictions.jsonl") if own else os.path.join(model_dir, "dev.jsonl")
            dev = score_records(kb.dev, read_jsonl(dev_file), dev_answers, world)
            test = {}
            if "test" in _outputs(job, name):
                test = score_records(kb.test, read_jsonl(os.path.join(model_dir, "test.jsonl")), real, world)
            results["models"][name] = {
                **test,
                "dev_em": dev["em"],
                "dev_em_by_kind": dev["em_by_kind"],
                "dev_em_squad_by_step": {r["step"]: r["eval_em"] for r in metrics if "eval_em" in r} if own else {},
                "loss_curve": [r["loss"] for r in metrics if "loss" in r],
                "loss_steps": [r["step"] for r in metrics if "loss" in r],
                "run_dir": job.run_dir,
                "trained_as": job.name,
            }
            if "hot_swap" in _outputs(job, name):
                records = read_jsonl(os.path.join(model_dir, "hot_swap.jsonl"))
                swap = score_records(kb.test, records, moved, kb.counterfactual)
                swap["follow_new"] = swap.pop("em")
                swap["follow_old"] = exact_match([r["answer"] for r in records], real)
                results["hot_swap"][name] = swap
        for world_name in ("real", "counterfactual"):
            path = os.path.join(job.run_dir, f"recall_{world_name}.jsonl")
            if f"recall_{world_name}" in job.evaluate:
                results["recall"][world_name] = recall_from(read_jsonl(path), settings.recall_k)
    return results

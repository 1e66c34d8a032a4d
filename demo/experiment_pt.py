"""The demo's experiment in PyTorch, through the library's commands (`rag_pt.finetune`, `rag_pt.evaluate`).

1. Four `custom` indexes built by `rag_core.build_index` with MiniLM (mean pooling): the real
   world, the hot swap's counterfactual world, the training world of the counterfactual
   augmentation, and the one-passage `null` index of the generator-only baseline (cached: a second
   run skips the embedding).
2. One initial RAG checkpoint, as a user would start: MiniLM as the question encoder, a small T5
   trained from scratch as the generator (seeded: every model starts from the same weights), the
   two tokenizers and the `RagConfig`.
3. Per fine-tuning run (`demo.pipeline`): `rag_pt.finetune.main(argv)` with the command line a user
   would type, then `rag_pt.evaluate.main(argv)` on the test questions (real index, and the hot
   swap's counterfactual index with the same weights). The question encoder is frozen, as RAG's
   paper keeps the passage encoder fixed (the passage vectors are MiniLM's, a fine-tuned question
   encoder would drift away from them unless the index were re-encoded), so each training
   question's passages are retrieved once (`--cache_retrieval`).

Index builds, fine-tuning runs and evaluations are tasks (`demo.pipeline.plan_tasks`) run by a pool
of processes with one thread each (`Settings.workers`, one per core), each task started as soon as
what it needs is ready: the generator-only run needs no MiniLM index and the counterfactual index
is needed only by the hot swap, so on two cores they fill the time the RAG run leaves. One thread
per process: on a small CPU two single-threaded processes do about twice the work of one process
using both cores, because these small matrix products do not split well across threads.
"""

from __future__ import annotations

import os

from .common import (
    Settings,
    Stages,
    cached_index,
    generator_config,
    generator_tokenizer,
    index_folder,
    index_is_built,
    minilm_path,
    question_tokenizer,
    rag_config,
)
from .knowledge import KnowledgeBase
from .pipeline import NULL_PASSAGE, Job, Progress, Task, collect, log_tail, make_jobs, plan_tasks, write_data


def run(kb: KnowledgeBase, settings: Settings, stages: Stages, cache_dir: str, progress: bool = True,
        work_dir: str = "demo_output/runs-pt") -> dict:
    with stages.stage("tokenizers"):
        q_tok = question_tokenizer()
        g_tok = generator_tokenizer(kb, q_tok, settings.generator_vocab, cache_dir)
    worlds = {"real": kb.passages, "counterfactual": kb.counterfactual_passages,
              "training_world": kb.training_world_passages, "null": [NULL_PASSAGE]}
    indexes = {name: index_folder(passages, cache_dir, name.replace("_", "-")) for name, passages in worlds.items()}
    with stages.stage("index: null"):  # one passage: the baseline's index, built here
        cached_index(worlds["null"], cache_dir, "null", progress)
    pending = {indexes[name]: (name.replace("_", " "), passages, cache_dir, name.replace("_", "-"))
               for name, passages in worlds.items() if not index_is_built(indexes[name])}

    with stages.stage("initial checkpoint and data files"):
        init = os.path.join(work_dir, "initial-checkpoint")
        parameters = save_initial_checkpoint(settings, q_tok, g_tok, indexes["real"], init)
        data = write_data(kb, os.path.join(work_dir, "data"), settings.code_repeats)
        jobs = make_jobs(settings, data, indexes, init, work_dir, os.path.join(cache_dir, "retrieval"))

    tasks = plan_tasks(jobs, pending)
    workers = max(1, settings.workers)
    label = (f"{len(pending)} indexes, fine-tune and evaluate {len(jobs)} runs "
             f"({workers} process{'es' if workers > 1 else ''})")
    with stages.stage(label):
        for task, (seconds, cpu) in _run_tasks(tasks, jobs, settings, workers, progress):
            key = f"  {task.name}"
            stages.seconds[key], stages.cpu_seconds[key] = seconds, cpu
    results = {"framework": "pt", "generator_parameters": parameters, **collect(kb, settings, jobs)}
    return results


def save_initial_checkpoint(settings: Settings, q_tok, g_tok, index_path: str, folder: str) -> int:
    """The RAG checkpoint every model starts from; returns the generator's parameter count."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, BertModel

    from rag_core import RagTokenizer
    from rag_pt import RagTokenForGeneration

    from transformers.utils import logging

    # with BERT's pooler (unused: the question vector is the mean of the token states) so that
    # the model classes, which build one, find every weight they expect in the checkpoint
    logging.set_verbosity_error()  # MiniLM's checkpoint has no pooler: "newly initialized" is expected here
    question_encoder = BertModel.from_pretrained(minilm_path())
    logging.set_verbosity_warning()
    logging.disable_progress_bar()
    config = rag_config(settings, question_encoder.config, generator_config(settings, len(g_tok)), index_path)
    torch.manual_seed(settings.seed)
    generator = AutoModelForSeq2SeqLM.from_config(config.generator)
    RagTokenForGeneration(config, question_encoder=question_encoder, generator=generator).save_pretrained(folder)
    RagTokenizer(q_tok, g_tok).save_pretrained(folder)
    logging.enable_progress_bar()
    return sum(p.numel() for p in generator.parameters())


def run_task(task: Task, threads: int) -> tuple:
    """Run one task (picklable entry point of a spawned process); returns its wall-clock and CPU seconds."""
    import contextlib
    import time

    import torch

    if threads:
        torch.set_num_threads(threads)
    start, cpu = time.perf_counter(), time.process_time()
    if task.kind == "index":
        passages, cache_dir, name = task.args
        cached_index(passages, cache_dir, name, progress=False)
    else:
        from rag_pt import evaluate, finetune

        main = finetune.main if task.kind == "finetune" else evaluate.main
        os.makedirs(os.path.dirname(task.log), exist_ok=True)
        with open(task.log, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            status = main(list(task.args[0]))
        if status != 0:
            raise RuntimeError(f"{task.name} exited with {status}; see {task.log}:\n{log_tail(task.log)}")
    return time.perf_counter() - start, time.process_time() - cpu


def _run_tasks(tasks: list[Task], jobs: list[Job], settings: Settings, workers: int, progress: bool):
    """Yield `(task, (seconds, cpu))` as tasks end, each started as soon as what it needs has ended.

    With several workers, a pool of processes with one thread each (the first ready task in `tasks`
    order goes to the first free process); with one, the tasks in order in this process."""

    bars = Progress(jobs, settings.train_steps, progress)
    done: set = set()
    try:
        if workers <= 1:
            while len(done) < len(tasks):
                task = next(t for t in tasks if t.name not in done and t.needs <= done)
                times = run_task(task, 0)
                done.add(task.name)
                bars.poll()
                yield task, times
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            running: dict = {}
            started: set = set()
            try:
                while len(done) < len(tasks):
                    for task in tasks:
                        if len(running) >= workers:
                            break
                        if task.name not in started and task.needs <= done:
                            running[pool.submit(run_task, task, 1)] = task
                            started.add(task.name)
                    finished, _ = wait(running, timeout=2.0, return_when=FIRST_COMPLETED)
                    bars.poll()
                    for future in finished:
                        task = running.pop(future)
                        times = future.result()  # a failed task raises here, naming its log
                        done.add(task.name)
                        if not progress:
                            print(f"[demo]   {task.name}: {times[0]:.1f} s", flush=True)
                        yield task, times
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        bars.close()

"""The demo's experiment in PyTorch, through the library's commands (`rag_pt.finetune`, `rag_pt.evaluate`).

1. Four `custom` indexes built by `rag_core.build_index` with MiniLM (mean pooling): the real
   world, the hot swap's counterfactual world, the training world of the counterfactual
   augmentation, and the one-passage `null` index of the generator-only baseline (cached: a second
   run skips the embedding).
2. One initial RAG checkpoint, as a user would start: MiniLM as the question encoder, a small T5
   trained from scratch as the generator (seeded: every model starts from the same weights), the
   two tokenizers and the `RagConfig`.
3. Per model (`demo.pipeline`): `rag_pt.finetune.main(argv)` with the command line a user would
   type, then `rag_pt.evaluate.main(argv)` on the test questions (real index, and the hot swap's
   counterfactual index with the same weights). The question encoder is frozen, as RAG's paper
   keeps the passage encoder fixed (the passage vectors are MiniLM's, a fine-tuned question
   encoder would drift away from them unless the index were re-encoded), so each training
   question's passages are retrieved once (`--cache_retrieval`).

The three models run side by side, each in its own process with one thread (`Settings.workers`):
on a small CPU that is about twice the throughput of one process using both cores, because these
small matrix products do not split well across threads.
"""

from __future__ import annotations

import os

from .common import (
    Settings,
    Stages,
    cached_index,
    generator_config,
    generator_tokenizer,
    minilm_path,
    question_tokenizer,
    rag_config,
)
from .knowledge import KnowledgeBase
from .pipeline import NULL_PASSAGE, Job, Progress, collect, make_jobs, run_job, write_data


def run(kb: KnowledgeBase, settings: Settings, stages: Stages, cache_dir: str, progress: bool = True,
        work_dir: str = "demo_output/runs-pt") -> dict:
    with stages.stage("tokenizers"):
        q_tok = question_tokenizer()
        g_tok = generator_tokenizer(kb, q_tok, settings.generator_vocab, cache_dir)
    indexes = {}
    for name, passages in (("real", kb.passages), ("counterfactual", kb.counterfactual_passages),
                           ("training_world", kb.training_world_passages), ("null", [NULL_PASSAGE])):
        with stages.stage(f"index: {name.replace('_', ' ')}"):
            indexes[name] = cached_index(passages, cache_dir, name.replace("_", "-"), progress)

    with stages.stage("initial checkpoint and data files"):
        init = os.path.join(work_dir, "initial-checkpoint")
        parameters = save_initial_checkpoint(settings, q_tok, g_tok, indexes["real"], init)
        data = write_data(kb, os.path.join(work_dir, "data"), settings.code_repeats)
        jobs = make_jobs(settings, data, indexes, init, work_dir, os.path.join(cache_dir, "retrieval"))

    workers = min(settings.workers, len(jobs))
    label = f"fine-tune and evaluate {len(jobs)} models ({workers} at a time)"
    with stages.stage(label):
        for job, times in _run_jobs(jobs, settings, workers, progress):
            for part, (seconds, cpu) in times.items():
                key = f"  {job.label}: {part}"
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


def job_in_process(job: Job, threads: int) -> dict:
    """A worker's whole job (picklable entry point of a spawned process)."""
    import torch

    from rag_pt import evaluate, finetune

    if threads:
        torch.set_num_threads(threads)
    return run_job(job, finetune.main, evaluate.main)


def _run_jobs(jobs: list[Job], settings: Settings, workers: int, progress: bool):
    """Yield `(job, times)` as jobs end; with several workers, each job in its own process with one thread."""
    import time

    bars = Progress(jobs, settings.train_steps, progress)
    try:
        if workers <= 1:
            for job in jobs:
                yield job, job_in_process(job, 0)
                bars.poll()
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending = {pool.submit(job_in_process, job, 1): job for job in jobs}
            done_jobs = {}
            while pending:
                done, _ = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                bars.poll()
                for future in done:
                    done_jobs[pending.pop(future).name] = future.result()
                time.sleep(0)
            for job in jobs:
                yield job, done_jobs[job.name]
    finally:
        bars.close()

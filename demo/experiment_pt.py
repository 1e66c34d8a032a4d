"""The demo's experiment in PyTorch, on the library's own classes.

1. Three `custom` indexes built by `rag_core.build_index` with MiniLM (mean pooling): the real
   world, the counterfactual one of the hot swap, and the training world of the counterfactual
   augmentation (cached: a second run skips the embedding).
2. `rag_pt.RagTokenForGeneration` and `rag_pt.RagSequenceForGeneration`, MiniLM as question
   encoder, a small T5 generator trained from scratch on every training question in the real and
   the training world; a generator-only baseline (the same T5, the same steps and batch size, the
   question alone as input, the real answers).
3. Held-out exact match, retrieval recall@k, and the hot swap: `model.set_retriever(...)` with
   the counterfactual index, no retraining.

The question encoder is frozen, as RAG's paper keeps the passage encoder fixed: the passage
vectors are MiniLM's, and a fine-tuned question encoder would drift away from them unless the
index were re-encoded. Frozen, a question's retrieval never changes, so the training questions
are encoded and retrieved once (through the model's own `encode_question` and the library's
`RagRetriever`) and training feeds the model the precomputed `context_input_ids` and
`doc_scores` - the same inputs `forward` computes itself when given `input_ids`, at a fraction of
the cost on two CPU cores. Evaluation goes the whole way: `generate(input_ids=...)` encodes,
retrieves, reads and answers.

The three generators train in separate processes, side by side (`Settings.workers`), each from
the same seeded initial weights; the trained weights come back into the models built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .common import (
    Settings,
    Stages,
    batches,
    cached_index,
    exact_match,
    generator_config,
    generator_tokenizer,
    join_contexts,
    learning_rate,
    minilm_path,
    pad_rows,
    question_tokenizer,
    rag_config,
    recall_at_k,
    retriever_for,
    score_predictions,
    training_answers,
)
from .knowledge import KnowledgeBase, Question

MODEL_LABELS = {"rag_token": "RAG-Token", "rag_sequence": "RAG-Sequence", "baseline": "Generator only"}


def run(kb: KnowledgeBase, settings: Settings, stages: Stages, cache_dir: str, progress: bool = True) -> dict:
    import torch
    from transformers import AutoModelForSeq2SeqLM, BertModel

    from rag_pt import RagSequenceForGeneration, RagTokenForGeneration

    torch.manual_seed(settings.seed)
    results: dict = {"framework": "pt", "models": {}, "hot_swap": {}, "recall": {}}

    # === Knowledge: tokenizers and the two indexes ===
    with stages.stage("tokenizers"):
        q_tok = question_tokenizer()
        g_tok = generator_tokenizer(kb, q_tok, settings.generator_vocab, cache_dir)
    with stages.stage("index: real world"):
        real_index = cached_index(kb.passages, cache_dir, "real", progress)
    with stages.stage("index: counterfactual world"):
        cf_index = cached_index(kb.counterfactual_passages, cache_dir, "counterfactual", progress)
    train_index = None
    if settings.augment:
        with stages.stage("index: training world (augmentation)"):
            train_index = cached_index(kb.training_world_passages, cache_dir, "training-world", progress)

    # === Models ===
    with stages.stage("models"):
        question_encoder = BertModel.from_pretrained(minilm_path(), add_pooling_layer=False)
        question_encoder.requires_grad_(False).eval()
        gen_config = generator_config(settings, len(g_tok))
        config = rag_config(settings, question_encoder.config, gen_config, real_index)
        real_retriever = retriever_for(config, q_tok, g_tok, real_index)
        cf_retriever = retriever_for(config, q_tok, g_tok, cf_index)
        train_retriever = retriever_for(config, q_tok, g_tok, train_index) if train_index else None

        def fresh_generator():
            torch.manual_seed(settings.seed)  # every model starts from the same generator weights
            return AutoModelForSeq2SeqLM.from_config(gen_config)

        models = {}
        if "rag_token" in settings.models:
            models["rag_token"] = RagTokenForGeneration(
                config, question_encoder=question_encoder, generator=fresh_generator(), retriever=real_retriever
            )
        if "rag_sequence" in settings.models:
            models["rag_sequence"] = RagSequenceForGeneration(
                config, question_encoder=question_encoder, generator=fresh_generator(), retriever=real_retriever
            )
        baseline = fresh_generator() if "baseline" in settings.models else None
        results["generator_parameters"] = sum(p.numel() for p in fresh_generator().parameters())

    # === Retrieval for the training questions, once (frozen question encoder) ===
    any_rag = next(iter(models.values()), None)
    train_labels = g_tok(training_answers(kb, settings))["input_ids"]
    contexts = None
    if models:
        with stages.stage("retrieve for training questions"):
            encoded = _encode(any_rag, q_tok, kb.train)
            contexts = _retrieve(encoded, real_retriever, settings.train_n_docs)
            if train_retriever is not None:
                contexts = join_contexts(contexts, _retrieve(encoded, train_retriever, settings.train_n_docs))

    # === Training: one process per model, `settings.workers` at a time ===
    questions = g_tok([q.question for q in kb.train])["input_ids"]
    # The baseline reads the question alone and learns the real world's answers only: a training
    # world it cannot see would only teach it to contradict itself.
    baseline_labels = train_labels[: len(kb.train)]
    jobs = [
        TrainJob(name, settings, config.to_dict(), contexts if name != "baseline" else None,
                 train_labels if name != "baseline" else baseline_labels,
                 questions if name == "baseline" else None, progress, position)
        for position, name in enumerate(n for n in settings.models if n in models or n == "baseline")
    ]
    worker_times = []
    with stages.stage(f"train {len(jobs)} models ({min(settings.workers, len(jobs))} at a time)"):
        for name, state, curve, seconds, cpu in _run_jobs(jobs, settings.workers):
            target = models[name].generator if name != "baseline" else baseline
            target.load_state_dict(state)
            target.eval()
            results["models"][name] = {"loss_curve": curve}
            worker_times.append((f"  {MODEL_LABELS[name]} (in its process)", seconds, cpu))
    for label, seconds, cpu in worker_times:
        stages.seconds[label], stages.cpu_seconds[label] = seconds, cpu

    # === Held-out evaluation, recall@k and the hot swap ===
    answers = [kb.answer_in(kb.regions, q) for q in kb.heldout]
    cf_answers = [kb.answer_in(kb.counterfactual, q) for q in kb.heldout]
    with stages.stage("evaluate"):
        for name, model in models.items():
            predictions, top_ids = _predict_rag(model, q_tok, g_tok, kb.heldout, settings)
            results["models"][name].update(score_predictions(kb.heldout, predictions, answers, top_ids, kb.regions))
        if baseline is not None:
            predictions = _predict_baseline(baseline, g_tok, kb.heldout, settings)
            results["models"]["baseline"].update(score_predictions(kb.heldout, predictions, answers, None, kb.regions))
        if any_rag is not None:
            results["recall"]["real"] = _recall(any_rag, q_tok, real_retriever, kb.heldout, settings)
            results["recall"]["counterfactual"] = _recall(any_rag, q_tok, cf_retriever, kb.heldout, settings)
    with stages.stage("hot swap"):
        for name, model in models.items():
            model.set_retriever(cf_retriever)  # the same trained weights, another world
            predictions, top_ids = _predict_rag(model, q_tok, g_tok, kb.heldout, settings)
            model.set_retriever(real_retriever)
            swap = score_predictions(kb.heldout, predictions, cf_answers, top_ids, kb.counterfactual)
            swap["follow_new"] = swap.pop("em")
            swap["follow_old"] = exact_match(predictions, answers)
            results["hot_swap"][name] = swap
    return results


# === Retrieval ===
def _encode(model, q_tok, questions: list[Question], batch_size: int = 256):
    """Question ids (numpy, per batch) and the model's own question vectors (mean-pooled MiniLM)."""
    import torch

    ids, vectors = [], []
    with torch.no_grad():
        for start in range(0, len(questions), batch_size):
            batch = q_tok([q.question for q in questions[start : start + batch_size]], padding=True, return_tensors="pt")
            vectors.append(model.rag.encode_question(batch["input_ids"], batch["attention_mask"]).numpy())
            ids.append(batch["input_ids"].numpy())
    return ids, vectors


def _retrieve(encoded, retriever, n_docs: int) -> dict:
    """Contexts and passage scores of every question (`encoded`: from `_encode`), from the library's retriever."""
    import torch

    from rag_pt.retrieval_bridge import score_documents

    rows_ids, rows_scores = [], []
    for ids, vectors in zip(*encoded):
        out = retriever(ids, vectors, n_docs=n_docs, return_tensors="np")
        scores = score_documents(torch.from_numpy(vectors), torch.from_numpy(out["retrieved_doc_embeds"]), torch.from_numpy(out["doc_ids"]))
        mask = out["context_attention_mask"].astype(bool)
        rows_ids += [row[m].tolist() for row, m in zip(out["context_input_ids"], mask)]
        rows_scores.append(scores.numpy())
    return {"context_rows": rows_ids, "doc_scores": np.concatenate(rows_scores)}


def _recall(model, q_tok, retriever, questions: list[Question], settings: Settings) -> dict:
    _, vectors = _encode(model, q_tok, questions)
    return recall_at_k(retriever, np.concatenate(vectors), questions, settings.recall_k)


# === Training ===
@dataclass
class TrainJob:
    """Everything one model's training needs, picklable for a worker process."""

    name: str  # "rag_token", "rag_sequence" or "baseline"
    settings: Settings
    config: dict  # RagConfig.to_dict()
    contexts: Optional[dict]  # precomputed retrieval (RAG models)
    labels: list
    questions: Optional[list]  # generator ids of the questions (baseline)
    progress: bool
    position: int  # of its progress bar


def _run_jobs(jobs: list[TrainJob], workers: int):
    """Train each job's generator; yields (name, generator state_dict, loss curve, seconds, cpu seconds).

    With two or more workers the models train side by side, each in its own process with one
    thread: on a small CPU that is about twice the throughput of one process using both cores,
    because these small matrix products do not split well across threads. Three processes on two
    cores (the default) beat two-then-one: the operating system shares the cores, and nobody waits
    for the baseline to start.
    """
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            yield train_job(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(train_job, jobs):
            yield result


def train_job(job: TrainJob):
    """Build the job's model from its config (the same seeded generator weights every time) and train it."""
    import time

    import torch
    from transformers import AutoModel, AutoModelForSeq2SeqLM

    from rag_core import RagConfig
    from rag_pt import RagSequenceForGeneration, RagTokenForGeneration

    start, cpu = time.perf_counter(), time.process_time()
    if job.settings.workers > 1:
        torch.set_num_threads(1)
    config = RagConfig(**job.config)
    torch.manual_seed(job.settings.seed)  # every model starts from the same generator weights
    generator = AutoModelForSeq2SeqLM.from_config(config.generator)
    if job.name == "baseline":
        curve = _train_baseline(generator, job.questions, job.labels, job.settings, job.progress, job.position)
    else:
        # Training reads precomputed contexts: the (frozen) question encoder is never run here,
        # so it is built from its config, not loaded.
        question_encoder = AutoModel.from_config(config.question_encoder).requires_grad_(False)
        head = RagTokenForGeneration if job.name == "rag_token" else RagSequenceForGeneration
        model = head(config, question_encoder=question_encoder, generator=generator)
        curve = _train_rag(model, job.contexts, job.labels, job.settings, job.progress, MODEL_LABELS[job.name], job.position)
    state = {k: v.detach().clone() for k, v in generator.state_dict().items()}
    return job.name, state, curve, time.perf_counter() - start, time.process_time() - cpu


def _optimizer(params, settings: Settings):
    import torch

    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=settings.learning_rate, weight_decay=0.01)


def _loop(loss_fn, params, n: int, settings: Settings, steps: int, progress: bool, label: str, position: int = 0) -> list[float]:
    import torch
    from tqdm.auto import tqdm

    params = [p for p in params if p.requires_grad]
    optimizer = _optimizer(params, settings)
    curve = []
    bar = tqdm(total=steps, desc=f"train {label:<14}", unit="step", disable=not progress, dynamic_ncols=True, position=position)
    for step, idx in enumerate(batches(n, settings.batch_size, steps, settings.seed)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings, steps)
        loss = loss_fn(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        curve.append(float(loss.detach()))
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(curve[-25:]):.3f}")
    bar.close()
    return curve


def _train_rag(model, contexts: dict, train_labels: list, settings: Settings, progress: bool, label: str, position: int = 0) -> list[float]:
    import torch

    n_docs, pad = settings.train_n_docs, model.config.generator.pad_token_id
    rows, doc_scores = contexts["context_rows"], torch.from_numpy(contexts["doc_scores"])

    def loss_fn(idx):
        flat = (idx[:, None] * n_docs + np.arange(n_docs)).reshape(-1)
        context_ids = torch.from_numpy(pad_rows([rows[i] for i in flat], pad))
        labels = torch.from_numpy(pad_rows([train_labels[i] for i in idx], pad))
        out = model(
            context_input_ids=context_ids,
            context_attention_mask=context_ids.ne(pad).long(),
            doc_scores=doc_scores[idx],
            labels=labels,
            n_docs=n_docs,
        )
        return out.loss.mean()  # (B,) summed over each answer's tokens

    model.train()
    model.question_encoder.eval()  # frozen; no dropout either
    curve = _loop(loss_fn, model.parameters(), len(rows) // n_docs, settings, settings.train_steps, progress, label, position)
    model.eval()
    return curve


def _train_baseline(generator, questions: list, train_labels: list, settings: Settings, progress: bool, position: int = 0) -> list[float]:
    """The same generator on question -> answer, with the same loss convention as the RAG models
    (labels are the decoder input, targets the labels shifted left; summed per answer)."""
    import torch
    from torch.nn import functional as F

    from rag_pt.losses import shift_targets_left

    pad = generator.config.pad_token_id

    def loss_fn(idx):
        input_ids = torch.from_numpy(pad_rows([questions[i] for i in idx], pad))
        labels = torch.from_numpy(pad_rows([train_labels[i] for i in idx], pad))
        logits = generator(input_ids=input_ids, attention_mask=input_ids.ne(pad).long(), decoder_input_ids=labels).logits
        target = shift_targets_left(labels, pad)
        nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=pad, reduction="none")
        return nll.sum(1).mean()

    generator.train()
    steps = settings.baseline_steps if settings.baseline_steps is not None else settings.train_steps
    curve = _loop(loss_fn, generator.parameters(), len(questions), settings, steps, progress, MODEL_LABELS["baseline"], position)
    generator.eval()
    return curve


# === Prediction and scoring ===
def _predict_rag(model, q_tok, g_tok, questions: list[Question], settings: Settings):
    """Answers from `generate(input_ids=...)` (retrieval included) and each question's top passage id."""
    import torch

    from rag_pt import RagSequenceForGeneration

    extra = {"rescore": "thorough"} if isinstance(model, RagSequenceForGeneration) else {}
    predictions, top_ids = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(questions), settings.eval_batch_size):
            chunk = [q.question for q in questions[start : start + settings.eval_batch_size]]
            batch = q_tok(chunk, padding=True, return_tensors="pt")
            out = model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                num_beams=1,
                max_new_tokens=settings.max_answer_tokens,
                n_docs=settings.n_docs,
                output_provenance=True,
                **extra,
            )
            predictions += g_tok.batch_decode(out.sequences, skip_special_tokens=True)
            top_ids += out.doc_ids[:, 0].tolist()
    return predictions, top_ids


def _predict_baseline(generator, g_tok, questions: list[Question], settings: Settings) -> list[str]:
    import torch

    predictions = []
    with torch.no_grad():
        for start in range(0, len(questions), settings.eval_batch_size):
            chunk = [q.question for q in questions[start : start + settings.eval_batch_size]]
            batch = g_tok(chunk, padding=True, return_tensors="pt")
            ids = generator.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                num_beams=1,
                max_new_tokens=settings.max_answer_tokens,
            )
            predictions += g_tok.batch_decode(ids, skip_special_tokens=True)
    return predictions

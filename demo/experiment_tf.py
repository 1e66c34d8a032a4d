"""The demo's experiment in TensorFlow: `rag_tf.TFRagTokenForGeneration`, trained by Keras `fit`.

The same knowledge, tokenizers, indexes (shared cache) and generator configuration as the
PyTorch run. Differences, all on purpose:

- MiniLM is a PyTorch checkpoint; the library's converter (`rag_core.convert`, an explicit weight
  table, no torch needed) writes a TensorFlow copy once, cached beside the indexes.
- Training is `model.compile(optimizer)` + `model.fit(tf.data.Dataset)` in graph mode, on
  batches of precomputed context (`context_input_ids`, `context_attention_mask`, `doc_scores`,
  `labels`), for the same reason as in PyTorch: the question encoder is frozen, so each training
  question's retrieval is computed once.
- The generator-only baseline is transformers' TF generator trained by `fit` too. RAG-Sequence is
  not trained here (the PyTorch run has it); the TF run compares RAG-Token with the baseline.
- Nothing here imports torch (no PyTorch in the TF run): the indexes are embedded with the
  converted TF MiniLM when the cache does not have them yet.
"""

from __future__ import annotations

import os

import numpy as np

from .common import (
    Settings,
    Stages,
    batches,
    cached_index,
    encoder_fingerprint,
    exact_match,
    fingerprint,
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

MODEL_LABELS = {"rag_token": "RAG-Token", "baseline": "Generator only"}


def run(kb: KnowledgeBase, settings: Settings, stages: Stages, cache_dir: str, progress: bool = True) -> dict:
    import tensorflow as tf
    from transformers import TFAutoModelForSeq2SeqLM, TFBertModel

    from rag_tf import TFRagTokenForGeneration

    import tf_keras

    tf_keras.utils.set_random_seed(settings.seed)  # Python, numpy and TensorFlow
    results: dict = {"framework": "tf", "models": {}, "hot_swap": {}, "recall": {}}

    # === MiniLM in TensorFlow, through the library's converter ===
    with stages.stage("convert MiniLM to TensorFlow"):
        minilm_tf = converted_minilm(cache_dir)
        question_encoder = TFBertModel.from_pretrained(minilm_tf, name="question_encoder")
        question_encoder.trainable = False  # frozen, as in the PyTorch run

    # === Knowledge: tokenizers and the two indexes ===
    with stages.stage("tokenizers"):
        q_tok = question_tokenizer()
        g_tok = generator_tokenizer(kb, q_tok, settings.generator_vocab, cache_dir)
    encoder = TFPassageTextEncoder(question_encoder, q_tok)
    with stages.stage("index: real world"):
        real_index = cached_index(kb.passages, cache_dir, "real", progress, encoder=encoder)
    with stages.stage("index: counterfactual world"):
        cf_index = cached_index(kb.counterfactual_passages, cache_dir, "counterfactual", progress, encoder=encoder)
    train_index = None
    if settings.augment:
        with stages.stage("index: training world (augmentation)"):
            train_index = cached_index(kb.training_world_passages, cache_dir, "training-world", progress, encoder=encoder)

    # === Models ===
    with stages.stage("models"):
        gen_config = generator_config(settings, len(g_tok))
        config = rag_config(settings, question_encoder.config, gen_config, real_index)
        real_retriever = retriever_for(config, q_tok, g_tok, real_index)
        cf_retriever = retriever_for(config, q_tok, g_tok, cf_index)
        train_retriever = retriever_for(config, q_tok, g_tok, train_index) if train_index else None
        tf.random.set_seed(settings.seed)
        model = TFRagTokenForGeneration(config, question_encoder=question_encoder, retriever=real_retriever)
        tf.random.set_seed(settings.seed)
        baseline = TFAutoModelForSeq2SeqLM.from_config(gen_config)

    with stages.stage("retrieve for training questions"):
        encoded = _encode(model, q_tok, kb.train)
        contexts = _retrieve(encoded, real_retriever, settings.train_n_docs)
        if train_retriever is not None:
            contexts = join_contexts(contexts, _retrieve(encoded, train_retriever, settings.train_n_docs))
    train_labels = g_tok(training_answers(kb, settings))["input_ids"]
    baseline_labels = train_labels[: len(kb.train)]  # the real world only, as in the PyTorch run

    # === Training with Keras fit ===
    with stages.stage("train RAG-Token"):
        results["models"]["rag_token"] = {"loss_curve": _fit(model, _rag_batches(contexts, train_labels, settings), settings, progress, "RAG-Token")}
        results["generator_parameters"] = int(sum(np.prod(v.shape) for v in model.generator.trainable_variables))
    with stages.stage("train Generator only"):
        questions = g_tok([q.question for q in kb.train])["input_ids"]
        results["models"]["baseline"] = {
            "loss_curve": _fit(baseline, _baseline_batches(questions, baseline_labels, settings), settings, progress, "Generator only")
        }

    # === Evaluation, recall@k, hot swap ===
    answers = [kb.answer_in(kb.regions, q) for q in kb.heldout]
    cf_answers = [kb.answer_in(kb.counterfactual, q) for q in kb.heldout]
    with stages.stage("evaluate"):
        predictions, top_ids = _predict_rag(model, q_tok, g_tok, kb.heldout, settings)
        results["models"]["rag_token"].update(score_predictions(kb.heldout, predictions, answers, top_ids, kb.regions))
        predictions = _predict_baseline(baseline, g_tok, kb.heldout, settings)
        results["models"]["baseline"].update(score_predictions(kb.heldout, predictions, answers, None, kb.regions))
        vectors = _encode(model, q_tok, kb.heldout)[1]
        results["recall"]["real"] = recall_at_k(real_retriever, vectors, kb.heldout, settings.recall_k)
        results["recall"]["counterfactual"] = recall_at_k(cf_retriever, vectors, kb.heldout, settings.recall_k)
    with stages.stage("hot swap"):
        model.set_retriever(cf_retriever)
        predictions, top_ids = _predict_rag(model, q_tok, g_tok, kb.heldout, settings)
        model.set_retriever(real_retriever)
        swap = score_predictions(kb.heldout, predictions, cf_answers, top_ids, kb.counterfactual)
        swap["follow_new"] = swap.pop("em")
        swap["follow_old"] = exact_match(predictions, answers)
        results["hot_swap"]["rag_token"] = swap
    return results


# === MiniLM in TensorFlow ===
def converted_minilm(cache_dir: str) -> str:
    """A TensorFlow copy of the packaged MiniLM (`tf_model.h5`), written once by `rag_core.convert`."""
    from rag_core.convert import convert_question_encoder

    folder = os.path.join(cache_dir, f"minilm-tf-{fingerprint('minilm-tf-v1', encoder_fingerprint())}")
    if not os.path.isfile(os.path.join(folder, "tf_model.h5")):
        convert_question_encoder(minilm_path(), folder, to="tf", overwrite=True)
    return folder


class TFPassageTextEncoder:
    """MiniLM in TensorFlow as the index builder's encoder: `title + " " + text`, mean pooling, not
    normalised (what the library's PyTorch `TransformersEncoder` computes for the PT run)."""

    pooling = "mean"

    def __init__(self, encoder, tokenizer):
        self.encoder, self.tokenizer = encoder, tokenizer

    def __call__(self, titles, texts) -> np.ndarray:
        sentences = [f"{t} {x}".strip() for t, x in zip(titles, texts)]
        batch = self.tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="np")
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state.numpy()
        mask = batch["attention_mask"][..., None].astype(np.float32)
        return ((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)).astype(np.float32)


# === Retrieval ===
def _encode(model, q_tok, questions: list[Question], batch_size: int = 256):
    ids, vectors = [], []
    for start in range(0, len(questions), batch_size):
        batch = q_tok([q.question for q in questions[start : start + batch_size]], padding=True, return_tensors="np")
        vectors.append(model.rag.encode_question(batch["input_ids"], batch["attention_mask"]).numpy())
        ids.append(batch["input_ids"])
    return ids, np.concatenate(vectors)


def _retrieve(encoded, retriever, n_docs: int) -> dict:
    ids, vectors = encoded
    rows, scores, start = [], [], 0
    for chunk in ids:
        chunk_vectors = vectors[start : start + len(chunk)]
        start += len(chunk)
        out = retriever(chunk, chunk_vectors, n_docs=n_docs)
        mask = out["context_attention_mask"].astype(bool)
        rows += [row[m].tolist() for row, m in zip(out["context_input_ids"], mask)]
        scores.append(np.einsum("bd,bnd->bn", chunk_vectors, out["retrieved_doc_embeds"]))
    return {"context_rows": rows, "doc_scores": np.concatenate(scores).astype(np.float32)}


# === Training ===
def _rag_batches(contexts: dict, train_labels: list, settings: Settings):
    """The same batches as the PyTorch run, as fixed-width arrays (one graph for all steps)."""
    n_docs, pad = settings.train_n_docs, 1
    rows, scores = contexts["context_rows"], contexts["doc_scores"]
    width = max(len(r) for r in rows)
    label_width = max(len(r) for r in train_labels)
    for idx in batches(len(rows) // n_docs, settings.batch_size, settings.train_steps, settings.seed):
        flat = (idx[:, None] * n_docs + np.arange(n_docs)).reshape(-1)
        context = _pad_to([rows[i] for i in flat], pad, width)
        yield {
            "context_input_ids": context,
            "context_attention_mask": (context != pad).astype(np.int64),
            "doc_scores": scores[idx],
            "labels": _pad_to([train_labels[i] for i in idx], pad, label_width),
        }


def _baseline_batches(questions: list, train_labels: list, settings: Settings):
    """Question -> answer for transformers' TF generator: its `labels` are the targets (our labels
    without the leading <s>, which it prepends itself as decoder start), -100 where padded."""
    width = max(len(r) for r in questions)
    label_width = max(len(r) for r in train_labels) - 1
    steps = settings.baseline_steps if settings.baseline_steps is not None else settings.train_steps
    for idx in batches(len(questions), settings.batch_size, steps, settings.seed):
        input_ids = _pad_to([questions[i] for i in idx], 1, width)
        labels = _pad_to([train_labels[i][1:] for i in idx], -100, label_width)
        yield {"input_ids": input_ids, "attention_mask": (input_ids != 1).astype(np.int64), "labels": labels}


def _pad_to(rows: list, pad_id: int, width: int) -> np.ndarray:
    out = pad_rows(rows, pad_id)
    return np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=pad_id)


def _fit(model, batch_iter, settings: Settings, progress: bool, label: str) -> list[float]:
    """`model.fit` on a `tf.data.Dataset` of whole batches, one Keras epoch per step so that the
    logged loss is the step's own (Keras averages over an epoch)."""
    import tensorflow as tf
    import tf_keras
    from tqdm.auto import tqdm

    batches_list = list(batch_iter)
    steps = len(batches_list)
    first = batches_list[0]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches_list),
        output_signature={k: tf.TensorSpec(v.shape, tf.as_dtype(v.dtype)) for k, v in first.items()},
    )

    class Schedule(tf_keras.optimizers.schedules.LearningRateSchedule):
        """`common.learning_rate` in TensorFlow ops (checked against it below)."""

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = tf.minimum(1.0, (step + 1.0) / settings.warmup_steps)
            start = settings.decay_from * steps
            decay = tf.where(step < start, 1.0, tf.maximum(0.1, 1.0 - 0.9 * (step - start) / max(1.0, steps - start)))
            return settings.learning_rate * warm * decay

    for probe in (0, steps // 2, steps - 1):
        assert abs(float(Schedule()(tf.constant(probe))) - learning_rate(probe, settings, steps)) < 1e-6
    model.compile(optimizer=tf_keras.optimizers.AdamW(learning_rate=Schedule(), weight_decay=0.01, global_clipnorm=1.0))
    curve: list[float] = []
    bar = tqdm(total=steps, desc=f"fit {label}", unit="step", disable=not progress, dynamic_ncols=True)

    class Record(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            curve.append(float(logs["loss"]))
            bar.update(1)
            if epoch % 25 == 0:
                bar.set_postfix(loss=f"{np.mean(curve[-25:]):.3f}")

    model.fit(dataset.repeat(), epochs=steps, steps_per_epoch=1, verbose=0, callbacks=[Record()])
    bar.close()
    return curve


# === Prediction ===
def _predict_rag(model, q_tok, g_tok, questions: list[Question], settings: Settings):
    predictions, top_ids = [], []
    for start in range(0, len(questions), settings.eval_batch_size):
        chunk = [q.question for q in questions[start : start + settings.eval_batch_size]]
        batch = q_tok(chunk, padding=True, return_tensors="np")
        out = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            num_beams=1,
            max_new_tokens=settings.max_answer_tokens,
            n_docs=settings.n_docs,
            output_provenance=True,
        )
        predictions += g_tok.batch_decode(np.asarray(out.sequences), skip_special_tokens=True)
        top_ids += np.asarray(out.doc_ids)[:, 0].tolist()
    return predictions, top_ids


def _predict_baseline(generator, g_tok, questions: list[Question], settings: Settings) -> list[str]:
    predictions = []
    for start in range(0, len(questions), settings.eval_batch_size):
        chunk = [q.question for q in questions[start : start + settings.eval_batch_size]]
        batch = g_tok(chunk, padding=True, return_tensors="np")
        ids = generator.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=1, max_new_tokens=settings.max_answer_tokens
        )
        predictions += g_tok.batch_decode(np.asarray(ids), skip_special_tokens=True)
    return predictions

"""The demo's experiment in TensorFlow: `rag_tf.TFRagTokenForGeneration`, trained by Keras 3 `fit`.

The same knowledge, tokenizers, indexes (shared cache), generator configuration and recipe
(steps, batch size, schedule, counterfactual augmentation) as the PyTorch run. Differences, all on
purpose:

- Every model is one of `rag_tf`'s own Keras 3 models: MiniLM is read from its PyTorch checkpoint
  (`rag_tf.models.registry.load_question_encoder`, weights by name, no conversion step, no torch),
  the T5 generator is built by `registry.build_generator`. No transformers TensorFlow class, no
  tf-keras.
- Training is `model.compile(optimizer)` + `model.fit(tf.data.Dataset)` in graph mode, on
  batches of precomputed context (`context_input_ids`, `context_attention_mask`, `doc_scores`,
  `labels`), for the same reason as in PyTorch: the question encoder is frozen, so each training
  question's retrieval is computed once.
- The generator-only baseline is the same Keras T5 wrapped in a small `keras.Model`
  (`GeneratorOnly`) that computes its cross-entropy (the generator computes logits only), trained
  by `fit` too, and decoded by `rag_tf.decoding` (the loop RAG-Sequence decodes its generator
  with). RAG-Sequence is not trained here (the PyTorch run has it); the TF run compares RAG-Token
  with the baseline.
- Nothing here imports torch (no PyTorch in the TF run): the indexes are embedded with the Keras
  MiniLM when the cache does not have them yet (the same weights and pooling as the PyTorch
  encoder, hence the same cache key).
"""

from __future__ import annotations

import functools

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

MODEL_LABELS = {"rag_token": "RAG-Token", "baseline": "Generator only"}
# Decoding runs as a graph (tf.function), not XLA: every evaluation batch has its own question and
# context widths, and XLA compiles once per shape (on 2 cores, 500 held-out questions took 74 s
# with jit_compile=True against 19 s without, compilation included).
JIT_DECODE = False


def run(kb: KnowledgeBase, settings: Settings, stages: Stages, cache_dir: str, progress: bool = True) -> dict:
    import keras

    from rag_tf import TFRagTokenForGeneration
    from rag_tf.models.registry import build_generator, load_question_encoder

    keras.utils.set_random_seed(settings.seed)  # Python, numpy and TensorFlow
    results: dict = {"framework": "tf", "models": {}, "hot_swap": {}, "recall": {}}

    # === MiniLM as the library's Keras BERT, read from its PyTorch checkpoint ===
    with stages.stage("MiniLM (Keras)"):
        # no pooler: the question vector is the mean of the token states, as in the PyTorch run
        question_encoder = load_question_encoder(minilm_path(), name="question_encoder", add_pooling_layer=False)
        question_encoder.trainable = False  # frozen, as in the PyTorch run

    # === Knowledge: tokenizers and the indexes ===
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
        keras.utils.set_random_seed(settings.seed)
        generator = build_generator(gen_config, name="generator")
        generator.ensure_built()
        model = TFRagTokenForGeneration(config, question_encoder=question_encoder, generator=generator, retriever=real_retriever)
        model.ensure_built()
        # the baseline starts from the same generator weights, as in the PyTorch run
        baseline_generator = build_generator(gen_config, name="generator")
        baseline_generator.ensure_built()
        baseline_generator.set_weights(generator.get_weights())
        baseline = GeneratorOnly(baseline_generator, label_smoothing=config.label_smoothing)
        results["generator_parameters"] = int(sum(np.prod(v.shape) for v in generator.trainable_variables))

    with stages.stage("retrieve for training questions"):
        encoded = _encode(model, q_tok, kb.train)
        contexts = _retrieve(encoded, real_retriever, settings.train_n_docs)
        if train_retriever is not None:
            contexts = join_contexts(contexts, _retrieve(encoded, train_retriever, settings.train_n_docs))
    train_labels = g_tok(training_answers(kb, settings))["input_ids"]
    # The baseline reads the question alone and learns the real world's answers only, as in the PyTorch run.
    baseline_labels = train_labels[: len(kb.train)]

    # === Training with Keras fit ===
    pad = gen_config.pad_token_id
    questions = g_tok([q.question for q in kb.train])["input_ids"]
    jobs = {
        "rag_token": (model, _rag_batches(contexts, train_labels, settings, pad)),
        "baseline": (baseline, _baseline_batches(questions, baseline_labels, settings, pad)),
    }
    side_by_side = settings.workers > 1
    stage = f"train {len(jobs)} models ({'side by side' if side_by_side else 'one after the other'})"
    with stages.stage(stage):
        for name, (curve, seconds) in _train_all(jobs, settings, progress, side_by_side).items():
            results["models"][name] = {"loss_curve": curve, "train_seconds": seconds}

    # === Evaluation, recall@k, hot swap ===
    answers = [kb.answer_in(kb.regions, q) for q in kb.heldout]
    cf_answers = [kb.answer_in(kb.counterfactual, q) for q in kb.heldout]
    with stages.stage("evaluate"):
        predictions, top_ids = _predict_rag(model, q_tok, g_tok, kb.heldout, settings)
        results["models"]["rag_token"].update(score_predictions(kb.heldout, predictions, answers, top_ids, kb.regions))
        predictions = _predict_baseline(baseline.generator, g_tok, kb.heldout, settings)
        results["models"]["baseline"].update(score_predictions(kb.heldout, predictions, answers, None, kb.regions))
        vectors = np.concatenate(_encode(model, q_tok, kb.heldout)[1])
        results["recall"]["real"] = recall_at_k(real_retriever, vectors, kb.heldout, settings.recall_k)
        results["recall"]["counterfactual"] = recall_at_k(cf_retriever, vectors, kb.heldout, settings.recall_k)
    with stages.stage("hot swap"):
        model.set_retriever(cf_retriever)  # the same trained weights, another world
        predictions, top_ids = _predict_rag(model, q_tok, g_tok, kb.heldout, settings)
        model.set_retriever(real_retriever)
        swap = score_predictions(kb.heldout, predictions, cf_answers, top_ids, kb.counterfactual)
        swap["follow_new"] = swap.pop("em")
        swap["follow_old"] = exact_match(predictions, answers)
        results["hot_swap"]["rag_token"] = swap
    return results


# === MiniLM as the index builder's encoder ===
class TFPassageTextEncoder:
    """The Keras MiniLM as the index builder's encoder: `title + " " + text`, mean pooling, not
    normalised (what the library's PyTorch `TransformersEncoder` computes for the PT run)."""

    pooling = "mean"

    def __init__(self, encoder, tokenizer):
        import tensorflow as tf

        self.tokenizer = tokenizer
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec])  # one graph for every batch shape
        def embed(input_ids, attention_mask):
            hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = tf.cast(attention_mask, hidden.dtype)[:, :, None]
            return tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)

        self.embed = embed

    def __call__(self, titles, texts) -> np.ndarray:
        sentences = [f"{t} {x}".strip() for t, x in zip(titles, texts)]
        batch = self.tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="np")
        vectors = self.embed(batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32))
        return vectors.numpy().astype(np.float32)


# === Retrieval ===
def _encode(model, q_tok, questions: list[Question], batch_size: int = 256):
    """Question ids (numpy, per batch) and the model's own question vectors (mean-pooled MiniLM), per batch.

    Eager calls of `encode_question`, as `generate` makes them. A `tf.function` of it is ~10% faster
    but rounds differently (by ~1e-7), and training from scratch is sensitive enough to that to
    end elsewhere (on 2 cores: 85.2% held-out exact match instead of 92.6%, the same seed).
    """
    ids, vectors = [], []
    for start in range(0, len(questions), batch_size):
        batch = q_tok([q.question for q in questions[start : start + batch_size]], padding=True, return_tensors="np")
        vectors.append(model.rag.encode_question(batch["input_ids"], batch["attention_mask"]).numpy())
        ids.append(batch["input_ids"])
    return ids, vectors


def _retrieve(encoded, retriever, n_docs: int) -> dict:
    """Contexts and passage scores of every question (`encoded`: from `_encode`), from the library's retriever."""
    from rag_tf.retrieval_bridge import score_documents

    rows, scores = [], []
    for ids, vectors in zip(*encoded):
        out = retriever(ids, vectors, n_docs=n_docs, return_tensors="np")
        mask = out["context_attention_mask"].astype(bool)
        rows += [row[m].tolist() for row, m in zip(out["context_input_ids"], mask)]
        scores.append(score_documents(vectors, out["retrieved_doc_embeds"], out["doc_ids"]).numpy())
    return {"context_rows": rows, "doc_scores": np.concatenate(scores).astype(np.float32)}


# === Training ===
def _rag_batches(contexts: dict, train_labels: list, settings: Settings, pad: int):
    """The same batches as the PyTorch run, each padded to its own longest row (as in PyTorch)."""
    n_docs = settings.train_n_docs
    rows, scores = contexts["context_rows"], contexts["doc_scores"]
    for idx in batches(len(rows) // n_docs, settings.batch_size, settings.train_steps, settings.seed):
        flat = (idx[:, None] * n_docs + np.arange(n_docs)).reshape(-1)
        context = _pad([rows[i] for i in flat], pad)
        yield {
            "context_input_ids": context,
            "context_attention_mask": (context != pad).astype(np.int32),
            "doc_scores": scores[idx],
            "labels": _pad([train_labels[i] for i in idx], pad),
        }


def _baseline_batches(questions: list, train_labels: list, settings: Settings, pad: int):
    """Question -> answer: `labels` (<s> answer </s>) are the decoder input, as for the RAG models."""
    steps = settings.baseline_steps if settings.baseline_steps is not None else settings.train_steps
    for idx in batches(len(questions), settings.batch_size, steps, settings.seed):
        input_ids = _pad([questions[i] for i in idx], pad)
        labels = _pad([train_labels[i] for i in idx], pad)
        yield {"input_ids": input_ids, "attention_mask": (input_ids != pad).astype(np.int32), "labels": labels}


def _pad(rows: list, pad_id: int) -> np.ndarray:
    return pad_rows(rows, pad_id).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _generator_only_class():
    import keras
    import tensorflow as tf

    from rag_tf.losses import shift_targets_left

    class GeneratorOnly(keras.Model):
        """The generator without retrieval, for Keras `fit`: question -> answer.

        The generator returns logits only; the loss is computed here: the labels (<s> answer </s>)
        are the decoder input, the targets are the labels shifted left, and the loss is the mean
        token cross-entropy over the targets that are not padding (label-smoothed with
        `label_smoothing` > 0), as the transformers TF generator computed it in earlier versions
        of this demo.
        """

        def __init__(self, generator, label_smoothing: float = 0.0, **kwargs):
            super().__init__(**kwargs)
            self.generator = generator
            self.label_smoothing = float(label_smoothing or 0.0)

        def call(self, inputs, training=False):
            return self.generator(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                decoder_input_ids=inputs["labels"],
                training=training,
            ).logits

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            pad = self.generator.config.pad_token_id
            target = shift_targets_left(x["labels"], pad)
            logits = tf.cast(y_pred, tf.float32)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)  # (B, T)
            if self.label_smoothing:
                smooth = -tf.reduce_mean(tf.nn.log_softmax(logits, axis=-1), axis=-1)
                nll = (1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth
            weights = tf.cast(tf.not_equal(target, pad), tf.float32)
            return tf.reduce_sum(nll * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    return GeneratorOnly


def GeneratorOnly(generator, label_smoothing: float = 0.0, **kwargs):
    """`GeneratorOnly(generator)`: the keras.Model the baseline trains as (the class is built on
    first use, so that importing this module does not import TensorFlow)."""
    return _generator_only_class()(generator, label_smoothing=label_smoothing, **kwargs)


def _train_all(jobs: dict, settings: Settings, progress: bool, side_by_side: bool) -> dict:
    """`{name: (loss curve, seconds)}`: each job's `_fit`, both at once in two threads when
    `side_by_side` (as the PyTorch run trains its models in parallel processes: one small model's
    steps do not keep two cores busy, and TensorFlow runs graphs without holding the GIL)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    def train(position: int, name: str):
        model, batch_iter = jobs[name]
        start = time.perf_counter()
        curve = _fit(model, batch_iter, settings, progress, MODEL_LABELS[name], position)
        return curve, time.perf_counter() - start

    if not side_by_side:
        return {name: train(0, name) for name in jobs}
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="fit") as pool:
        futures = {name: pool.submit(train, position, name) for position, name in enumerate(jobs)}
        return {name: future.result() for name, future in futures.items()}


def _fit(model, batch_iter, settings: Settings, progress: bool, label: str, position: int = 0) -> list[float]:
    """`model.fit` on a `tf.data.Dataset` of whole batches, one Keras epoch per step so that the
    logged loss is the step's own (Keras averages over an epoch). The batch size is static, the
    widths are not: one graph serves every step, each batch padded to its own longest row."""
    import keras
    import tensorflow as tf
    from tqdm.auto import tqdm

    batches_list = list(batch_iter)
    steps = len(batches_list)
    first = batches_list[0]

    def spec(name, value):
        # token arrays: (batch, any width); doc_scores keep their static (batch, n_docs)
        shape = value.shape if name == "doc_scores" else value.shape[:1] + (None,) * (value.ndim - 1)
        return tf.TensorSpec(shape, tf.as_dtype(value.dtype))

    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches_list), output_signature={k: spec(k, v) for k, v in first.items()}
    )

    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        """`common.learning_rate` in TensorFlow ops (checked against it below)."""

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = tf.minimum(1.0, (step + 1.0) / settings.warmup_steps)
            start = settings.decay_from * steps
            decay = tf.where(step < start, 1.0, tf.maximum(0.1, 1.0 - 0.9 * (step - start) / max(1.0, steps - start)))
            return settings.learning_rate * warm * decay

        def get_config(self):
            return {}

    for probe in (0, steps // 2, steps - 1):
        assert abs(float(Schedule()(tf.constant(probe))) - learning_rate(probe, settings, steps)) < 1e-6
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=Schedule(), weight_decay=0.01, global_clipnorm=1.0))
    curve: list[float] = []
    bar = tqdm(total=steps, desc=f"fit {label:<14}", unit="step", disable=not progress, dynamic_ncols=True, position=position)

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            curve.append(float(logs["loss"]))
            bar.update(1)
            if epoch % 25 == 0:
                bar.set_postfix(loss=f"{np.mean(curve[-25:]):.3f}")

    model.fit(dataset.repeat(), epochs=steps, steps_per_epoch=1, shuffle=False, verbose=0, callbacks=[Record()])
    bar.close()
    return curve


# === Prediction ===
def _predict_rag(model, q_tok, g_tok, questions: list[Question], settings: Settings):
    """Answers from `generate(input_ids=...)` (retrieval included) and each question's top passage id."""
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
            jit_compile=JIT_DECODE,
        )
        predictions += g_tok.batch_decode(np.asarray(out.sequences), skip_special_tokens=True)
        top_ids += np.asarray(out.doc_ids)[:, 0].tolist()
    return predictions, top_ids


def _predict_baseline(generator, g_tok, questions: list[Question], settings: Settings) -> list[str]:
    """Greedy answers of the generator alone, decoded by `rag_tf.decoding` (RAG-Sequence's generator loop)."""
    from transformers import GenerationConfig

    from rag_tf import decoding, generation_utils

    generation_config = GenerationConfig.from_model_config(generator.config)
    generation_config.update(num_beams=1, max_new_tokens=settings.max_answer_tokens)
    options = decoding.DecodingOptions.from_generation_config(generation_config, generator.config)
    decode = generation_utils.make_decode_function(generator, options, rows_per_hypothesis=1, marginalize=False, jit_compile=JIT_DECODE)
    predictions = []
    for start in range(0, len(questions), settings.eval_batch_size):
        chunk = [q.question for q in questions[start : start + settings.eval_batch_size]]
        batch = g_tok(chunk, padding=True, return_tensors="np")
        raw = decode(batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32), None)
        ids = decoding.finalize(raw, options)["sequences"]
        predictions += g_tok.batch_decode(np.asarray(ids), skip_special_tokens=True)
    return predictions

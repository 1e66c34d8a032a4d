"""The demo's experiment in TensorFlow, through the library's commands (`rag_tf.finetune`, `rag_tf.evaluate`).

The same knowledge, tokenizers, indexes (shared cache), generator configuration, recipe and command
lines (`demo.pipeline`) as the PyTorch run; `rag_tf.finetune` trains with Keras 3 `fit` in graph mode.
Differences, all on purpose:

- Every model is one of `rag_tf`'s own Keras 3 models: MiniLM is read from its PyTorch checkpoint
  (`rag_tf.models.registry.load_question_encoder`, weights by name, no conversion step, no torch),
  the T5 generator is built by `registry.build_generator`. No transformers TensorFlow class, no
  tf-keras. The initial checkpoint is written by `TFRagTokenForGeneration.save_pretrained`.
- RAG-Token and the generator-only baseline only (the PyTorch run adds RAG-Sequence), one after the
  other in this process: TensorFlow spreads one model's graph over the cores itself.
- Nothing here imports torch (no PyTorch in the TF run): the indexes are embedded with the Keras
  MiniLM when the cache does not have them yet (the same weights and pooling as the PyTorch
  encoder, hence the same cache key).
"""

from __future__ import annotations

import os

import numpy as np

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
from .pipeline import NULL_PASSAGE, collect, make_jobs, run_job, write_data

MODELS = ("rag_token", "baseline")


def run(kb: KnowledgeBase, settings: Settings, stages: Stages, cache_dir: str, progress: bool = True,
        work_dir: str = "demo_output/runs-tf") -> dict:
    import keras

    from rag_tf import evaluate, finetune
    from rag_tf.models.registry import load_question_encoder

    settings.models = tuple(m for m in settings.models if m in MODELS)
    with stages.stage("MiniLM (Keras)"):
        # no pooler: the question vector is the mean of the token states, as in the PyTorch run
        question_encoder = load_question_encoder(minilm_path(), name="question_encoder", add_pooling_layer=False)
    with stages.stage("tokenizers"):
        q_tok = question_tokenizer()
        g_tok = generator_tokenizer(kb, q_tok, settings.generator_vocab, cache_dir)
    encoder = TFPassageTextEncoder(question_encoder, q_tok)
    indexes = {}
    for name, passages in (("real", kb.passages), ("counterfactual", kb.counterfactual_passages),
                           ("training_world", kb.training_world_passages), ("null", [NULL_PASSAGE])):
        with stages.stage(f"index: {name.replace('_', ' ')}"):
            indexes[name] = cached_index(passages, cache_dir, name.replace("_", "-"), progress, encoder=encoder)

    with stages.stage("initial checkpoint and data files"):
        init = os.path.join(work_dir, "initial-checkpoint")
        keras.utils.set_random_seed(settings.seed)
        parameters = save_initial_checkpoint(settings, question_encoder, q_tok, g_tok, indexes["real"], init)
        data = write_data(kb, os.path.join(work_dir, "data"), settings.code_repeats)
        jobs = make_jobs(settings, data, indexes, init, work_dir, os.path.join(cache_dir, "retrieval"))

    with stages.stage(f"fine-tune and evaluate {len(jobs)} models (one after the other)"):
        for job in jobs:
            if progress:
                print(f"[demo]   {job.label}: fine-tune and evaluate (log: {job.log})", flush=True)
            for part, (seconds, cpu) in run_job(job, finetune.main, evaluate.main).items():
                key = f"  {job.label}: {part}"
                stages.seconds[key], stages.cpu_seconds[key] = seconds, cpu
    return {"framework": "tf", "generator_parameters": parameters, **collect(kb, settings, jobs)}


def save_initial_checkpoint(settings: Settings, question_encoder, q_tok, g_tok, index_path: str, folder: str) -> int:
    """The RAG checkpoint every model starts from (safetensors under PyTorch names); returns the generator's size."""
    from rag_core import RagTokenizer
    from rag_tf import TFRagTokenForGeneration
    from rag_tf.models.registry import build_generator

    config = rag_config(settings, question_encoder.config, generator_config(settings, len(g_tok)), index_path)
    generator = build_generator(config.generator, name="generator")
    generator.ensure_built()
    model = TFRagTokenForGeneration(config, question_encoder=question_encoder, generator=generator)
    model.ensure_built()
    model.save_pretrained(folder)
    _add_pooler(folder, question_encoder.config.hidden_size, settings.seed)
    RagTokenizer(q_tok, g_tok).save_pretrained(folder)
    return int(sum(np.prod(v.shape) for v in generator.trainable_variables))


def _add_pooler(folder: str, hidden: int, seed: int) -> None:
    """BERT's pooler weights in the checkpoint, which the model classes build and expect (MiniLM's
    checkpoint has none; unused here: the question vector is the mean of the token states)."""
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    weights = load_file(path)
    prefix = "rag.question_encoder.pooler.dense."
    if prefix + "weight" in weights:
        return
    rng = np.random.default_rng(seed)
    weights[prefix + "weight"] = (rng.standard_normal((hidden, hidden)) * 0.02).astype(np.float32)
    weights[prefix + "bias"] = np.zeros(hidden, dtype=np.float32)
    save_file(weights, path, metadata={"format": "pt"})


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

"""Helpers of the TensorFlow suite: tiny model pairs (ours + transformers' TF RAG on the same
weights), contexts, and numpy references of the RAG maths (the oracle where the oracle is wrong).

The oracle is transformers' TF RAG (`transformers.TFRagTokenForGeneration`, ...): tests may import
it, the library never does. No torch here (tests/cross holds the PT <-> TF suite).
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np

from tests.harness.configs import tiny_rag_config
from tests.harness.retrieval import EmptySlots, tiny_index_paths  # noqa: F401 (EmptySlots re-exported)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OURS = {"model": "TFRagModel", "token": "TFRagTokenForGeneration", "sequence": "TFRagSequenceForGeneration"}


def ours_class(head: str):
    import rag_tf

    return getattr(rag_tf, OURS[head])


def oracle_class(head: str):
    import transformers

    return getattr(transformers, OURS[head])


def sharpen(config) -> None:
    """Larger random weights: peaked next-token distributions, so greedy/beam choices are not decided
    by float noise between two correct implementations."""
    gen = config.generator
    if gen.model_type == "bart":
        gen.init_std = 0.3
    else:
        gen.initializer_factor = 8.0


def make_config(question_encoder="dpr", generator="bart", passages_dir=None, **config_kwargs):
    if passages_dir is not None:
        config_kwargs = {**tiny_index_paths(passages_dir), **config_kwargs}
    config = tiny_rag_config(question_encoder, generator, **config_kwargs)
    sharpen(config)
    return config


def build_ours(config, head="token", seed=0, retriever=None):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed) if hasattr(tf.keras.utils, "set_random_seed") else tf.random.set_seed(seed)
    model = ours_class(head)(config, retriever=retriever)
    model.ensure_built()
    return model


def has_oracle() -> bool:
    """Whether transformers' TensorFlow RAG classes exist (transformers 4.x: the oracle environment)."""
    import transformers

    try:
        return getattr(transformers, "TFRagTokenForGeneration", None) is not None
    except (ImportError, RuntimeError):
        return False


def build_pair(head="token", seed=0, **config_kwargs):
    """(ours, oracle, config): our model with random weights and, where transformers 4.x is installed,
    its TF RAG loaded from our `tf_model.h5` (`save_format="h5"`); else the oracle is None."""
    config = make_config(**config_kwargs)
    ours = build_ours(config, head, seed)
    if not has_oracle():
        return ours, None, config
    from transformers import RagConfig as HFRagConfig

    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder, save_format="h5")
        oracle = oracle_class(head).from_pretrained(folder, config=HFRagConfig(**config.to_dict()))
    return ours, oracle, config


def make_contexts(generator_tokenizer, batch_size=2, n_docs=3, seed=0):
    """Precomputed contexts: `(B*N, L)` ids and mask (padded to the longest) and `(B, N)` scores, numpy."""
    from tests.harness.passages import PASSAGES

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(PASSAGES), size=batch_size * n_docs)
    texts = [f"{PASSAGES[p][0]} / {PASSAGES[p][1]} // question {i // n_docs}" for i, p in enumerate(picks)]
    enc = generator_tokenizer(texts, padding=True, return_tensors="np")
    return {
        "context_input_ids": enc["input_ids"].astype(np.int32),
        "context_attention_mask": enc["attention_mask"].astype(np.int32),
        "doc_scores": rng.standard_normal((batch_size, n_docs)).astype(np.float32),
    }


def make_labels(generator_tokenizer, answers, bos=True):
    enc = generator_tokenizer(list(answers), padding=True, return_tensors="np")
    ids = enc["input_ids"].astype(np.int32)
    return ids


# === numpy references of the maths ===
def _log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_loss(kind, seq_logits, doc_scores, labels, n_docs, pad, bos=None, eps=0.0, reduce=False, exclude_bos=False):
    """Reference RAG loss; `labels` unshifted (as the models take them)."""
    seq_logits = np.asarray(seq_logits, np.float64)
    B = labels.shape[0]
    target = np.concatenate([labels[:, 1:], np.full((B, 1), pad)], axis=1)
    T, V = target.shape[1], seq_logits.shape[-1]
    lp = _log_softmax(seq_logits, -1).reshape(B, n_docs, T, V)
    doc_lp = _log_softmax(np.asarray(doc_scores, np.float64), 1)
    mask = (target != pad).astype(np.float64)
    ll_mask = mask.copy()
    if exclude_bos and bos is not None and (target[:, 0] == bos).all():
        ll_mask[:, 0] = 0.0
    if kind == "token":
        m = _logsumexp(lp + doc_lp[:, :, None, None], 1)  # (B, T, V)
        tok = np.take_along_axis(m, target[:, :, None], -1)[..., 0]
        ll = (tok * ll_mask).sum(1)
        smooth = (m.sum(-1) * mask).sum(1)
    else:
        tok = np.take_along_axis(lp, np.broadcast_to(target[:, None, :, None], (B, n_docs, T, 1)), -1)[..., 0]
        ll = _logsumexp((tok * ll_mask[:, None]).sum(2) + doc_lp, 1)
        smooth = _logsumexp((lp.sum(-1) * mask[:, None]).sum(2) + V * doc_lp, 1)
    nll, smooth_loss = -ll, -smooth
    if reduce:
        nll, smooth_loss = nll.sum(), smooth_loss.sum()
    return (1 - eps) * nll + eps / V * smooth_loss


def weight_names(model):
    """Variable names without the first segment (the instance name, which Keras numbers)."""
    return sorted(w.name.split("/", 1)[-1] for w in model.weights)


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1")

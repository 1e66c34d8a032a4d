"""Model pairs for the cross-framework suite: ours in PyTorch with random weights, saved, converted
with `rag_core.convert`, and loaded into our TensorFlow twin; inputs built once for both."""

from __future__ import annotations

import numpy as np

from tests.harness.configs import tiny_rag_config
from tests.harness.passages import PASSAGES
from tests.harness.retrieval import tiny_index_paths

HEADS = {"model": "RagModel", "sequence": "RagSequenceForGeneration", "token": "RagTokenForGeneration"}
QUESTIONS = ["who wrote hamlet?", "what is the capital of germany?"]
ANSWERS = ["William Shakespeare", "Berlin"]


def sharpen(config) -> None:
    """Larger random BART weights (init_std 0.3), so the tiny model has peaked next-token
    distributions and greedy / beam choices are decided by the model, not by float noise.

    T5 keeps its default initialisation: its logits already have a median top-1/top-2 gap of ~0.3,
    and scaling its weights up (initializer_factor 4-8, as tests/pt does against an oracle running
    the same PyTorch kernels) makes the un-normalised T5 activations so large that float32 itself
    loses 1e-3 on some logits, in PyTorch and TensorFlow alike (both measured against float64).
    """
    if config.generator.model_type == "bart":
        config.generator.init_std = 0.3


def deepen(config, layers: int = 2) -> None:
    """`layers` encoder and decoder layers in the generator (the tiny default has one of each)."""
    gen = config.generator
    if gen.model_type == "bart":
        gen.encoder_layers = gen.decoder_layers = layers
    else:
        gen.num_layers = gen.num_decoder_layers = layers


def build_pair(tmp_dir, head: str, question_encoder: str, generator: str, passages_dir, seed: int = 0,
               sharpened: bool = True, layers: int = 1, **config_kwargs):
    """(pt_model, tf_model, pt_dir, tf_dir): the TF model loads the PyTorch checkpoint as it is (one
    `model.safetensors` serves both); `tf_dir` holds the same weights converted to transformers' TF
    layout (`tf_model.h5`) by `rag_core.convert`. `sharpened=False` keeps the default initialisation
    (nearly flat next-token distributions: generation then has to agree without wide margins)."""
    import torch

    import rag_pt
    import rag_tf
    from rag_core.convert import convert_checkpoint

    config = tiny_rag_config(question_encoder, generator, **tiny_index_paths(passages_dir), **config_kwargs)
    if sharpened:
        sharpen(config)
    if layers != 1:
        deepen(config, layers)
    torch.manual_seed(seed)
    pt_model = getattr(rag_pt, HEADS[head])(config).eval()
    pt_dir, tf_dir = tmp_dir / "pt", tmp_dir / "tf"
    pt_model.save_pretrained(pt_dir)
    convert_checkpoint(pt_dir, tf_dir, to="tf")
    tf_model = getattr(rag_tf, "TF" + HEADS[head]).from_pretrained(pt_dir)
    return pt_model, tf_model, pt_dir, tf_dir


def contexts(generator_tokenizer, batch_size: int, n_docs: int, seed: int = 0) -> dict:
    """Precomputed context as numpy: (B*N, L) ids and mask, (B, N) float32 doc scores."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(PASSAGES), size=batch_size * n_docs)
    texts = [f"{PASSAGES[p][0]} / {PASSAGES[p][1]} // {QUESTIONS[i // n_docs % 2]}" for i, p in enumerate(picks)]
    enc = generator_tokenizer(texts, padding=True, return_tensors="np")
    return {
        "context_input_ids": enc["input_ids"].astype(np.int64),
        "context_attention_mask": enc["attention_mask"].astype(np.int64),
        "doc_scores": rng.standard_normal((batch_size, n_docs)).astype(np.float32),
    }


def questions(question_encoder_tokenizer) -> dict:
    enc = question_encoder_tokenizer(QUESTIONS, padding=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def labels(generator_tokenizer) -> np.ndarray:
    return generator_tokenizer(ANSWERS, padding=True, return_tensors="np")["input_ids"].astype(np.int64)


def to_pt(inputs: dict) -> dict:
    import torch

    return {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}


def to_tf(inputs: dict) -> dict:
    import tensorflow as tf

    def convert(v):
        if not isinstance(v, np.ndarray):
            return v
        return tf.constant(v.astype(np.int32) if v.dtype == np.int64 else v)

    return {k: convert(v) for k, v in inputs.items()}


def numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)

"""Helpers of the fine-tuning suite: a tiny index built by `rag_core.build_index`, a toy question/answer
set, and tiny RAG checkpoints (weights + tokenizers) in the layout the commands read."""

from __future__ import annotations

import json
import os

from tests.harness.passages import PASSAGES

# A trivially learnable toy set: every question has the same answer, so a few steps teach it.
ANSWER = "Paris"
TRAIN_QUESTIONS = [
    "what is the capital of france?", "which city is the capital of france?", "where is the louvre?",
    "which city has the eiffel tower?", "where does the seine flow through the capital?",
    "what is the most populous city of france?", "name the french capital", "which city is called the city of light?",
]
VAL_QUESTIONS = ["capital of france?", "the capital city of france is", "the city of the eiffel tower",
                 "french capital city"]


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def write_toy_data(folder) -> str:
    """`train.jsonl` and `val.jsonl` of the toy set (answers as a list, titles as gold passages)."""
    os.makedirs(folder, exist_ok=True)
    write_jsonl(os.path.join(folder, "train.jsonl"),
                [{"question": q, "answers": [ANSWER]} for q in TRAIN_QUESTIONS])
    write_jsonl(os.path.join(folder, "val.jsonl"),
                [{"question": q, "answers": [ANSWER, "paris france"], "titles": ["Paris"]} for q in VAL_QUESTIONS])
    return str(folder)


def build_tiny_index(folder) -> str:
    """The harness passages with their fixed 16-dim embeddings, through the library's index builder."""
    from rag_core.build_index import build_index
    from tests.harness.retrieval import tiny_embeddings

    return build_index(PASSAGES, folder, embeddings=tiny_embeddings(), split=False, progress=False)


def tiny_config(index_dir, generator="bart"):
    from tests.harness.configs import tiny_rag_config

    return tiny_rag_config("dpr", generator, passages_path=str(index_dir), index_path=None, n_docs=2)


def save_tokenizers(folder, generator="bart") -> None:
    from rag_core import RagTokenizer
    from tests.harness.tokenizers import bart_tokenizer, question_encoder_tokenizer, t5_tokenizer

    generator_tokenizer = bart_tokenizer() if generator == "bart" else t5_tokenizer()
    RagTokenizer(question_encoder_tokenizer(), generator_tokenizer).save_pretrained(str(folder))


def pt_checkpoint(folder, index_dir, head="token", seed=0) -> str:
    import torch

    import rag_pt

    cls = rag_pt.RagTokenForGeneration if head == "token" else rag_pt.RagSequenceForGeneration
    torch.manual_seed(seed)
    cls(tiny_config(index_dir)).save_pretrained(str(folder))
    save_tokenizers(folder)
    return str(folder)


def tf_checkpoint(folder, index_dir, head="token", seed=0) -> str:
    import keras

    import rag_tf

    cls = rag_tf.TFRagTokenForGeneration if head == "token" else rag_tf.TFRagSequenceForGeneration
    keras.utils.set_random_seed(seed)
    model = cls(tiny_config(index_dir))
    model.ensure_built()
    model.save_pretrained(str(folder))
    save_tokenizers(folder)
    return str(folder)


def read_metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_losses(run_dir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]


def evals(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "eval_em" in r]


def tensorboard_scalars(folder) -> dict:
    """`{tag: [(step, value), ...]}` of every event file under `folder` (the TFRecord framing read by hand)."""
    import struct

    from tensorboard.compat.proto import event_pb2

    scalars = {}
    for root, _, files in os.walk(folder):
        for name in sorted(f for f in files if "tfevents" in f):
            data = open(os.path.join(root, name), "rb").read()
            offset = 0
            while offset < len(data):
                (length,) = struct.unpack("<Q", data[offset : offset + 8])
                event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
                offset += 12 + length + 4
                for value in event.summary.value:
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars

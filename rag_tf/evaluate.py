"""`python -m rag_tf.evaluate`: evaluate a RAG model end to end (EM, F1) or its retrieval (precision@k).

    python -m rag_tf.evaluate --model_name_or_path run/checkpoints/step-000200 \\
        --eval_file test.jsonl --eval_mode e2e --predictions_path preds.jsonl --metrics_path metrics.json

The options, the data formats, the metrics and the predictions file are shared with
`python -m rag_pt.evaluate` (`rag_core.training`); this module holds the two TensorFlow hooks:
generating answers with their passages, and encoding questions.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from rag_core.training.evaluation import run_evaluate

PROG = "python -m rag_tf.evaluate"


def load_model(components: Any, model_type: str):
    """The TensorFlow RAG model of a run (`rag_token` / `rag_sequence`), with the run's retriever attached."""
    from . import TFRagSequenceForGeneration, TFRagTokenForGeneration

    return components.load_model(model_type, TFRagTokenForGeneration, TFRagSequenceForGeneration)


class Predictor:
    """The framework hooks of `rag_core.training.evaluation` for a TensorFlow model."""

    def __init__(self, model):
        self.model = model

    def generate(self, batch: dict, n_docs: Optional[int], num_beams: int, max_length: int):
        kwargs = dict(n_docs=n_docs, num_beams=num_beams, max_length=max_length, min_length=1, output_provenance=True)
        if type(self.model).__name__ == "TFRagSequenceForGeneration":
            kwargs["do_deduplication"] = False  # as the original's validation
        out = self.model.generate(input_ids=tf.constant(batch["input_ids"], tf.int32),
                                  attention_mask=tf.constant(batch["attention_mask"], tf.int32), **kwargs)
        doc_ids = np.asarray(out.doc_ids) if out.doc_ids is not None else None
        return np.asarray(out.sequences), doc_ids, out.doc_titles

    def question_vectors(self, batch: dict) -> np.ndarray:
        vectors = self.model.rag.encode_question(tf.constant(batch["input_ids"], tf.int32),
                                                 tf.constant(batch["attention_mask"], tf.int32))
        return np.asarray(vectors, dtype=np.float32)


def main(argv: Optional[list[str]] = None) -> int:
    return run_evaluate(argv, PROG, load_model, Predictor)


if __name__ == "__main__":
    sys.exit(main())

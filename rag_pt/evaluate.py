"""`python -m rag_pt.evaluate`: evaluate a RAG model end to end (EM, F1) or its retrieval (precision@k).

    python -m rag_pt.evaluate --model_name_or_path run/checkpoints/step-000200 \\
        --eval_file test.jsonl --eval_mode e2e --predictions_path preds.jsonl --metrics_path metrics.json

The options, the data formats, the metrics and the predictions file are shared with
`python -m rag_tf.evaluate` (`rag_core.training`); this module holds the two PyTorch hooks:
generating answers with their passages, and encoding questions.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np
import torch

from rag_core.training.evaluation import run_evaluate

PROG = "python -m rag_pt.evaluate"


def load_model(components: Any, model_type: str):
    """The PyTorch RAG model of a run (`rag_token` / `rag_sequence`), with the run's retriever attached."""
    from . import RagSequenceForGeneration, RagTokenForGeneration

    return components.load_model(model_type, RagTokenForGeneration, RagSequenceForGeneration)


class Predictor:
    """The framework hooks of `rag_core.training.evaluation` for a PyTorch model."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def generate(self, batch: dict, n_docs: Optional[int], num_beams: int, max_length: int):
        model = self.model
        was_training = model.training
        model.eval()
        kwargs = dict(n_docs=n_docs, num_beams=num_beams, max_length=max_length, min_length=1, output_provenance=True)
        if type(model).__name__ == "RagSequenceForGeneration":
            kwargs["do_deduplication"] = False  # as the original's validation
        try:
            out = model.generate(input_ids=torch.as_tensor(batch["input_ids"]),
                                 attention_mask=torch.as_tensor(batch["attention_mask"]), **kwargs)
        finally:
            model.train(was_training)
        doc_ids = out.doc_ids.cpu().numpy() if out.doc_ids is not None else None
        return out.sequences.cpu().numpy(), doc_ids, out.doc_titles

    @torch.no_grad()
    def question_vectors(self, batch: dict) -> np.ndarray:
        rag = self.model.rag
        vectors = rag.encode_question(torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"]))
        return vectors.float().cpu().numpy()


def main(argv: Optional[list[str]] = None) -> int:
    return run_evaluate(argv, PROG, load_model, Predictor)


if __name__ == "__main__":
    sys.exit(main())

"""Evaluation shared by both frameworks: the validation of a fine-tuning run and the evaluate commands.

A framework supplies a *predictor* with two hooks (everything else is here, on numpy):

- `generate(batch, n_docs, num_beams, max_length) -> (sequences, doc_ids, doc_titles)`: answers of a
  batch (`input_ids`, `attention_mask` as numpy) with the passages each was generated from;
- `question_vectors(batch) -> np.ndarray`: `(B, D)` question vectors (retrieval evaluation).

Each prediction record holds the question, the answer, the gold answers, the passages used
(`doc_ids`, `titles`) and the question's scores, so a wrong answer can be traced to its passages.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .. import metrics
from .data import Columns, QAExample, encode_batch, read_examples, read_gold_titles, split_file


def _batches(examples: Sequence[QAExample], batch_size: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    with tqdm(total=len(examples), desc=desc, unit="question", disable=not progress, dynamic_ncols=True,
              leave=False) as bar:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            yield chunk
            bar.update(len(chunk))


def predict_answers(predictor: Any, components: Any, examples: Sequence[QAExample], *, batch_size: int,
                    n_docs: Optional[int], num_beams: int, max_source_length: int, max_target_length: int,
                    progress: bool = False) -> list[dict]:
    """End-to-end prediction records (see the module docstring), in the order of `examples`."""
    records = []
    for chunk in _batches(examples, batch_size, progress, "generating"):
        batch = encode_batch(components.question_tokenizer, components.generator_tokenizer, chunk,
                             max_source_length=max_source_length, max_target_length=None,
                             decoder_start_token_id=components.decoder_start_token_id, with_labels=False)
        sequences, doc_ids, titles = predictor.generate(batch, n_docs=n_docs, num_beams=num_beams,
                                                        max_length=max_target_length)
        answers = components.generator_tokenizer.batch_decode(np.asarray(sequences), skip_special_tokens=True)
        doc_ids = np.asarray(doc_ids) if doc_ids is not None else None
        for i, (example, answer) in enumerate(zip(chunk, answers)):
            answer = answer.strip()
            records.append({
                "question": example.question,
                "answer": answer,
                "gold_answers": list(example.answers),
                "doc_ids": doc_ids[i].tolist() if doc_ids is not None else None,
                "titles": list(titles[i]) if titles is not None else None,
                "em": metrics.exact_match(answer, example.answers) if example.answers else None,
                "f1": metrics.f1(answer, example.answers) if example.answers else None,
            })
    return records


def e2e_metrics(records: Sequence[dict]) -> dict:
    """Mean EM and F1 of prediction records (over those with gold answers)."""
    scored = [r for r in records if r["gold_answers"]]
    return metrics.e2e_scores([r["answer"] for r in scored], [r["gold_answers"] for r in scored])


def retrieve_passages(predictor: Any, components: Any, examples: Sequence[QAExample], *, k: int, batch_size: int,
                      max_source_length: int, gold_key: str = "title", progress: bool = False) -> list[dict]:
    """Retrieval records: the top-k passages (ids, titles) of each question against its gold items."""
    records = []
    for chunk in _batches(examples, batch_size, progress, "retrieving"):
        batch = encode_batch(components.question_tokenizer, components.generator_tokenizer, chunk,
                             max_source_length=max_source_length, max_target_length=None,
                             decoder_start_token_id=components.decoder_start_token_id, with_labels=False)
        vectors = np.asarray(predictor.question_vectors(batch), dtype=np.float32)
        _, doc_ids, doc_dicts = components.retriever.retrieve(vectors, k)
        for example, ids, docs in zip(chunk, doc_ids, doc_dicts):
            titles = [str(t) for t in docs["title"]]
            retrieved = titles if gold_key == "title" else [str(i) for i in ids.tolist()]
            gold = list(example.titles)
            records.append({
                "question": example.question,
                "doc_ids": ids.tolist(),
                "titles": titles,
                "gold": gold,
                f"precision@{k}": metrics.precision_at_k(retrieved, gold, k),
                f"recall@{k}": metrics.recall_at_k(retrieved, gold, k),
            })
    return records


def retrieval_metrics(records: Sequence[dict], k: int, gold_key: str = "title") -> dict:
    retrieved = [r["titles"] if gold_key == "title" else [str(i) for i in r["doc_ids"]] for r in records]
    return metrics.retrieval_scores(retrieved, [r["gold"] for r in records], k)


# === The evaluate command ===
def load_eval_examples(args) -> list[QAExample]:
    columns = Columns(args.question_column, args.answers_column, args.titles_column, args.answer_separator)
    retrieval = args.eval_mode == "retrieval"
    if args.gold_data_path is not None:
        examples = [QAExample(question, (), titles) for question, titles in read_gold_titles(args.gold_data_path)]
    else:
        path = args.eval_file if args.eval_file is not None else split_file(args.data_dir, args.split)
        examples = read_examples(path, columns, need_answers=not retrieval)
        if retrieval and not any(e.titles for e in examples):
            from ..errors import TrainingDataError

            raise TrainingDataError(f"{path!r}: retrieval evaluation needs gold titles or passage ids (column "
                                    f"{args.titles_column!r}), or --gold_data_path")
    if args.max_eval_examples is not None:
        examples = examples[: args.max_eval_examples]
    return examples


def run_evaluate(argv, prog: str, load_model: Callable, make_predictor: Callable) -> int:
    """`main` of `python -m rag_pt.evaluate` / `rag_tf.evaluate`: the framework gives `load_model(components,
    model_type)` and `make_predictor(model)`; metrics are printed as JSON and written where asked."""
    from ..errors import RagError
    from .cli import parse_evaluate_args
    from .components import resolve_components

    args = parse_evaluate_args(argv, prog)
    try:
        examples = load_eval_examples(args)
        components = resolve_components(args, n_docs=args.eval_n_docs)
        model = load_model(components, args.model_type)
        predictor = make_predictor(model)
        if args.eval_mode == "e2e":
            records = predict_answers(predictor, components, examples, batch_size=args.eval_batch_size,
                                      n_docs=args.eval_n_docs, num_beams=args.num_beams,
                                      max_source_length=args.max_source_length,
                                      max_target_length=args.max_target_length, progress=args.progress)
            result = e2e_metrics(records)
        else:
            k = args.k if args.k is not None else components.config.n_docs
            records = retrieve_passages(predictor, components, examples, k=k, batch_size=args.eval_batch_size,
                                        max_source_length=args.max_source_length, gold_key=args.gold_key,
                                        progress=args.progress)
            result = retrieval_metrics(records, k, args.gold_key)
    except (RagError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = {"eval_mode": args.eval_mode, **result}
    from .run import write_json, write_jsonl

    if args.predictions_path:
        write_jsonl(os.path.abspath(args.predictions_path), records)
    if args.metrics_path:
        write_json(os.path.abspath(args.metrics_path), result)
    print(json.dumps(result, sort_keys=True))
    return 0

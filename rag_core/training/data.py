"""Question/answer data for fine-tuning and evaluation: reading files, batching, tokenizing. numpy only.

Formats (chosen by the file extension):

- JSONL: one object per line, `{"question": "...", "answers": ["...", "..."]}`; the answers may also
  be one string, split at the answer separator (`|` by default). Blank lines are skipped.
- CSV / TSV: a header row naming the columns; answers as one separator-joined string.
- the original's layout: `train.source` (one question per line) with `train.target` (the answers of
  that question on the same line, separator-joined; one answer per line in the original's data).

Column names are options (`question` / `answers` by default). Gold passages for retrieval
evaluation come from an optional column (`titles` by default: a list, or a separator-joined string
of titles or passage ids). A malformed line raises `TrainingDataError` naming the file and the line.

Example:
    >>> examples = read_examples("train.jsonl")                           # doctest: +SKIP
    >>> examples[0].question, examples[0].answers
    ('who wrote hamlet?', ['William Shakespeare', 'Shakespeare'])
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

from ..errors import TrainingDataError

DELIMITED = {"csv": ",", "tsv": "\t"}
JSONL = ("jsonl", "json", "ndjson")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question, its gold answers, and (for retrieval evaluation) its gold titles or passage ids."""

    question: str
    answers: tuple[str, ...]
    titles: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where the fields are: column names and the separator of joined answers / titles."""

    question: str = "question"
    answers: str = "answers"
    titles: str = "titles"
    separator: str = "|"


def _split(value: str, separator: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(separator) if part.strip()) if separator else (value.strip(),)


def _as_strings(value, separator: str, what: str, where: str, required: bool) -> tuple[str, ...]:
    if value is None or value == "":
        if required:
            raise TrainingDataError(f"{where}: no {what}")
        return ()
    if isinstance(value, str):
        parts = _split(value, separator)
    elif isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        parts = tuple(str(v).strip() for v in value if str(v).strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = (str(value),)
    else:
        raise TrainingDataError(f"{where}: {what} must be a string or a list of strings, got {type(value).__name__}")
    if required and not parts:
        raise TrainingDataError(f"{where}: {what} are empty")
    return parts


def _example(question, answers, titles, columns: Columns, where: str, need_answers: bool) -> QAExample:
    if not isinstance(question, str) or not question.strip():
        raise TrainingDataError(f"{where}: column {columns.question!r} must be a non-empty string, got {question!r}")
    return QAExample(
        question=question.strip(),
        answers=_as_strings(answers, columns.separator, f"answers (column {columns.answers!r})", where, need_answers),
        titles=_as_strings(titles, columns.separator, f"titles (column {columns.titles!r})", where, False),
    )


def file_format(path: str) -> str:
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension in JSONL:
        return "jsonl"
    if extension in DELIMITED or extension in ("source", "target"):
        return extension
    raise TrainingDataError(f"{path!r}: unknown data format {extension!r}; use .jsonl, .csv, .tsv or .source/.target")


def read_examples(path: str, columns: Columns = Columns(), need_answers: bool = True) -> list[QAExample]:
    """Examples of one file (see the module docstring); `.source` reads its `.target` sibling."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    kind = file_format(path)
    if kind == "jsonl":
        examples = _read_jsonl(path, columns, need_answers)
    elif kind in DELIMITED:
        examples = _read_delimited(path, DELIMITED[kind], columns, need_answers)
    else:
        examples = _read_source_target(os.path.splitext(path)[0], columns, need_answers)
    if not examples:
        raise TrainingDataError(f"{path!r} holds no examples")
    return examples


def _read_jsonl(path: str, columns: Columns, need_answers: bool) -> list[QAExample]:
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path!r} line {number}"
            try:
                record = json.loads(line)
            except ValueError as err:
                raise TrainingDataError(f"{where}: not valid JSON ({err})") from None
            if not isinstance(record, dict):
                raise TrainingDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if columns.question not in record:
                raise TrainingDataError(f"{where}: no {columns.question!r} field (fields: {sorted(record)})")
            if need_answers and columns.answers not in record:
                raise TrainingDataError(f"{where}: no {columns.answers!r} field (fields: {sorted(record)})")
            examples.append(_example(record[columns.question], record.get(columns.answers), record.get(columns.titles),
                                     columns, where, need_answers))
    return examples


def _read_delimited(path: str, delimiter: str, columns: Columns, need_answers: bool) -> list[QAExample]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    examples = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise TrainingDataError(f"{path!r} is empty")
        header = [h.strip() for h in header]
        wanted = [columns.question] + ([columns.answers] if need_answers else [])
        missing = [c for c in wanted if c not in header]
        if missing:
            raise TrainingDataError(f"{path!r} line 1: the header {header} lacks the column(s) {missing}")
        position = {name: i for i, name in enumerate(header)}
        start = reader.line_num + 1
        for row in reader:
            where = f"{path!r} line {start}"
            start = reader.line_num + 1
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise TrainingDataError(f"{where}: {len(row)} fields, but the header has {len(header)}")
            get = lambda name: row[position[name]] if name in position else None  # noqa: E731
            examples.append(_example(get(columns.question), get(columns.answers), get(columns.titles), columns, where,
                                     need_answers))
    return examples


def _read_source_target(stem: str, columns: Columns, need_answers: bool) -> list[QAExample]:
    source, target = stem + ".source", stem + ".target"
    with open(source, encoding="utf-8") as f:
        questions = f.read().splitlines()
    if not os.path.isfile(target):
        if need_answers:
            raise FileNotFoundError(f"{source!r} has no answers file {target!r} next to it")
        answers = [""] * len(questions)
    else:
        with open(target, encoding="utf-8") as f:
            answers = f.read().splitlines()
    if len(answers) != len(questions):
        line = min(len(answers), len(questions)) + 1
        shorter = target if len(answers) < len(questions) else source
        raise TrainingDataError(f"{shorter!r} line {line}: {source!r} has {len(questions)} lines but {target!r} has "
                                f"{len(answers)}; line i of one must match line i of the other")
    examples = []
    for number, (question, answer) in enumerate(zip(questions, answers), 1):
        if not question.strip():
            raise TrainingDataError(f"{source!r} line {number}: empty question")
        where = f"{target!r} line {number}"
        examples.append(QAExample(question.strip(), _as_strings(answer, columns.separator, "answers", where, need_answers)))
    return examples


def split_file(data_dir: str, split: str) -> str:
    """The file of `split` (train, val, test) in a data folder: `{split}.jsonl|.csv|.tsv|.source`."""
    for extension in ("jsonl", "csv", "tsv", "source"):
        path = os.path.join(data_dir, f"{split}.{extension}")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{data_dir!r} holds no {split}.jsonl, {split}.csv, {split}.tsv or {split}.source")


def read_gold_titles(path: str) -> list[tuple[str, tuple[str, ...]]]:
    """The original's `gold_data_path` for retrieval: `question<TAB>title1<TAB>title2...` per line."""
    path, rows = os.fspath(path), []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0].strip():
                raise TrainingDataError(f"{path!r} line {number}: expected 'question<TAB>title[<TAB>title...]'")
            rows.append((parts[0].strip(), tuple(p.strip() for p in parts[1:] if p.strip())))
    if not rows:
        raise TrainingDataError(f"{path!r} holds no questions")
    return rows


# === Batches ===
def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The example order of one epoch: a permutation that depends on (seed, epoch) only, so a resumed
    run sees the batches the uninterrupted run would have seen."""
    if not shuffle:
        return np.arange(num_examples)
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(num_examples: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                  shuffle: bool = True) -> list[np.ndarray]:
    """Batches of one epoch for process `rank` of `world_size`: each global batch of
    `batch_size * world_size` examples is split into equal per-process parts (the last, smaller one too)."""
    order = epoch_order(num_examples, seed, epoch, shuffle)
    step = batch_size * world_size
    batches = []
    for start in range(0, num_examples, step):
        chunk = order[start : start + step]
        if len(chunk) < world_size:
            break  # too few examples left to give every process one
        batches.append(np.array_split(chunk, world_size)[rank])
    return batches


@dataclasses.dataclass(frozen=True)
class MicroBatch:
    """One batch of the training stream and where the stream stands after it."""

    indices: np.ndarray
    epoch: int  # the epoch the batch belongs to
    next_epoch: int  # the position after this batch: (next_epoch, next_position)
    next_position: int

    @property
    def ends_epoch(self) -> bool:
        return self.next_epoch != self.epoch


def micro_batches(num_examples: int, batch_size: int, seed: int, epoch: int = 0, position: int = 0, rank: int = 0,
                  world_size: int = 1):
    """The endless stream of training batches from batch `position` of `epoch` on, epoch after epoch.

    Optimizer steps take `gradient_accumulation_steps` consecutive batches of this stream (across
    epoch ends), in both frameworks; a run resumed at a (epoch, position) sees the same batches."""
    while True:
        batches = batch_indices(num_examples, batch_size, seed, epoch, rank, world_size)
        if not batches:
            raise TrainingDataError(f"{num_examples} training examples are too few for {world_size} processes")
        for i in range(position, len(batches)):
            last = i + 1 == len(batches)
            yield MicroBatch(batches[i], epoch, epoch + 1 if last else epoch, 0 if last else i + 1)
        epoch, position = epoch + 1, 0


def encode_batch(question_tokenizer, generator_tokenizer, examples: Sequence[QAExample], *,
                 max_source_length: int, max_target_length: Optional[int], decoder_start_token_id: int,
                 pad_to_max: bool = False, with_labels: bool = True) -> dict:
    """numpy int32/int64 inputs of a batch: `input_ids`, `attention_mask` and, with `with_labels`, `labels`.

    `labels` are the first answer tokenized by the generator tokenizer, with the generator's decoder
    start token in front: the model feeds `labels` to the decoder and scores `labels` shifted left,
    so each answer token (the generator's BOS included, for BART) is predicted from the ones before
    it, starting from the token `generate` starts from. `pad_to_max` pads to the maximum lengths
    (fixed shapes: one graph trace in TensorFlow); otherwise to the longest row.
    """
    padding = "max_length" if pad_to_max else "longest"
    questions = question_tokenizer([e.question for e in examples], padding=padding, truncation=True,
                                   max_length=max_source_length, return_tensors="np")
    batch = {"input_ids": questions["input_ids"].astype(np.int64),
             "attention_mask": questions["attention_mask"].astype(np.int64)}
    if with_labels:
        batch["labels"] = encode_labels(generator_tokenizer, examples, max_target_length=max_target_length,
                                        decoder_start_token_id=decoder_start_token_id, pad_to_max=pad_to_max)
    return batch


def encode_labels(generator_tokenizer, examples: Sequence[QAExample], *, max_target_length: Optional[int],
                  decoder_start_token_id: int, pad_to_max: bool = False) -> np.ndarray:
    """`labels` of `encode_batch`: each example's first answer, the decoder start token in front (int64)."""
    length = max_target_length - 1 if max_target_length else None
    targets = generator_tokenizer([e.answers[0] for e in examples], padding="max_length" if pad_to_max else "longest",
                                  truncation=length is not None, max_length=length, return_tensors="np")
    ids = targets["input_ids"].astype(np.int64)
    start = np.full((len(examples), 1), decoder_start_token_id, dtype=np.int64)
    return np.concatenate([start, ids], axis=1)

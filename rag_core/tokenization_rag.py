"""`RagTokenizer`: the question encoder's tokenizer and the generator's tokenizer, together.

Layout on disk is the original's (`question_encoder_tokenizer/`, `generator_tokenizer/`), so
tokenizers saved by transformers' `RagTokenizer` load here and the reverse.

Unlike the original, there is no hidden "current tokenizer" mode: questions always go through the
question-encoder tokenizer, targets through the generator tokenizer, chosen per call:

    >>> batch = tokenizer(["who wrote hamlet?"], text_target=["shakespeare"], return_tensors="np")
    >>> sorted(batch.keys())
    ['attention_mask', 'input_ids', 'labels', 'token_type_ids']

`as_target_tokenizer()` still exists for old code; it restores the input mode on exit, even when
the block raises.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Optional

from transformers import AutoTokenizer, BatchEncoding

from . import compat


class RagTokenizer:
    """A question-encoder tokenizer and a generator tokenizer, used as one."""

    QUESTION_ENCODER_SUBFOLDER = "question_encoder_tokenizer"
    GENERATOR_SUBFOLDER = "generator_tokenizer"

    def __init__(self, question_encoder, generator):
        if question_encoder is None or generator is None:
            raise ValueError("RagTokenizer needs both a question_encoder and a generator tokenizer")
        self.question_encoder = question_encoder
        self.generator = generator
        self._target_mode = False

    # === Loading and saving ===
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory!r} is a file, not a directory")
        os.makedirs(save_directory, exist_ok=True)
        self.question_encoder.save_pretrained(os.path.join(save_directory, self.QUESTION_ENCODER_SUBFOLDER))
        self.generator.save_pretrained(os.path.join(save_directory, self.GENERATOR_SUBFOLDER))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "RagTokenizer":
        """Load both tokenizers from a directory in the original's layout (or a model id in the
        huggingface_hub cache; `cache_dir`, `revision`, `token`, `local_files_only` apply).

        `config` (a `RagConfig`) may be passed; otherwise the directory's `config.json` is read
        when present (it tells the tokenizer classes for directories without tokenizer configs).
        """
        from .hub import pop_hub_kwargs, resolve_folder

        path = os.fspath(resolve_folder(pretrained_model_name_or_path, **pop_hub_kwargs(kwargs)))
        config = kwargs.pop("config", None)
        if config is None and os.path.isfile(os.path.join(path, "config.json")):
            from .configuration_rag import RagConfig

            config = RagConfig.from_pretrained(path)
        for sub in (cls.QUESTION_ENCODER_SUBFOLDER, cls.GENERATOR_SUBFOLDER):
            if os.path.isdir(path) and not os.path.isdir(os.path.join(path, sub)):
                raise FileNotFoundError(
                    f"{path!r} has no {sub}/ folder: a RagTokenizer directory holds "
                    f"{cls.QUESTION_ENCODER_SUBFOLDER}/ and {cls.GENERATOR_SUBFOLDER}/"
                )
        question_encoder = AutoTokenizer.from_pretrained(
            path,
            subfolder=cls.QUESTION_ENCODER_SUBFOLDER,
            config=config.question_encoder if config is not None else None,
            **kwargs,
        )
        generator = AutoTokenizer.from_pretrained(
            path,
            subfolder=cls.GENERATOR_SUBFOLDER,
            config=config.generator if config is not None else None,
            **kwargs,
        )
        return cls(question_encoder=question_encoder, generator=generator)

    # === Encoding ===
    def __call__(self, text: Any = None, *args, text_target: Any = None, **kwargs) -> BatchEncoding:
        """Tokenize questions with the question-encoder tokenizer and, with `text_target`, targets
        with the generator tokenizer (returned as `labels`)."""
        if text is None and text_target is None:
            raise ValueError("RagTokenizer needs `text` (questions) and/or `text_target` (answers)")
        if text is None:
            return _tokenize(self.generator, text_target, *args, **kwargs)
        tokenizer = self.generator if self._target_mode else self.question_encoder
        encoding = _tokenize(tokenizer, text, *args, **kwargs)
        if text_target is not None:
            targets = _tokenize(self.generator, text_target, **kwargs)
            encoding["labels"] = targets["input_ids"]
        return encoding

    def encode_targets(self, text_target: Any, **kwargs) -> BatchEncoding:
        """Tokenize answers with the generator tokenizer (what the models take as `labels`)."""
        return self.generator(text_target, **kwargs)

    @contextlib.contextmanager
    def as_target_tokenizer(self):
        """Old-style target mode: inside the block, `__call__` uses the generator tokenizer."""
        previous = self._target_mode
        self._target_mode = True
        try:
            yield self
        finally:
            self._target_mode = previous

    def prepare_seq2seq_batch(
        self,
        src_texts: list[str],
        tgt_texts: Optional[list[str]] = None,
        max_length: Optional[int] = None,
        max_target_length: Optional[int] = None,
        padding: str = "longest",
        return_tensors: Optional[str] = None,
        truncation: bool = True,
        **kwargs,
    ) -> BatchEncoding:
        """Questions and (optionally) answers in one batch, as the original offered."""
        batch = _tokenize(
            self.question_encoder,
            src_texts,
            max_length=max_length if max_length is not None else self.question_encoder.model_max_length,
            padding=padding,
            truncation=truncation,
            return_tensors=return_tensors,
            **kwargs,
        )
        if tgt_texts is not None:
            labels = _tokenize(
                self.generator,
                tgt_texts,
                max_length=max_target_length if max_target_length is not None else self.generator.model_max_length,
                padding=padding,
                truncation=truncation,
                return_tensors=return_tensors,
                **kwargs,
            )
            batch["labels"] = labels["input_ids"]
        return batch

    # === Decoding (always the generator's vocabulary) ===
    def batch_decode(self, sequences, *args, **kwargs) -> list[str]:
        return self.generator.batch_decode(compat.framework_to_numpy(sequences), *args, **kwargs)

    def decode(self, token_ids, *args, **kwargs) -> str:
        return self.generator.decode(compat.framework_to_numpy(token_ids), *args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"RagTokenizer(question_encoder={type(self.question_encoder).__name__}, "
            f"generator={type(self.generator).__name__})"
        )


def _tokenize(tokenizer, text, *args, return_tensors=None, **kwargs) -> BatchEncoding:
    """`tokenizer(text, ...)`, with `return_tensors="tf"` also under transformers 5 (numpy, then TF)."""
    if return_tensors == "tf":
        return compat.batch_encoding(dict(tokenizer(text, *args, return_tensors="np", **kwargs)), "tf")
    return tokenizer(text, *args, return_tensors=return_tensors, **kwargs)

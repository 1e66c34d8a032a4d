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
from .errors import TokenizerInputError


class RagTokenizer:
    """A question-encoder tokenizer and a generator tokenizer, used as one."""

    QUESTION_ENCODER_SUBFOLDER = "question_encoder_tokenizer"
    GENERATOR_SUBFOLDER = "generator_tokenizer"

    def __init__(self, question_encoder, generator):
        for name, tokenizer in (("question_encoder", question_encoder), ("generator", generator)):
            if tokenizer is None:
                raise TokenizerInputError(f"RagTokenizer needs both tokenizers; `{name}` is None")
            if not callable(tokenizer) or not hasattr(tokenizer, "batch_decode"):
                raise TokenizerInputError(
                    f"`{name}` must be a transformers tokenizer (callable, with batch_decode), got "
                    f"{type(tokenizer).__name__}"
                )
        self.question_encoder = question_encoder
        self.generator = generator
        self._target_mode = False

    # === Loading and saving ===
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `question_encoder_tokenizer/` and `generator_tokenizer/` into `save_directory`.

        Atomic (`rag_core.storage.atomic_save`): both folders are written beside it first and each
        replaces its old version whole; other files in `save_directory` (a model's) are kept, and a
        failure leaves the previous tokenizers as they were. A file at `save_directory` raises
        `NotAFolderError`."""
        from .storage import atomic_save

        with atomic_save(save_directory) as staging:
            self.question_encoder.save_pretrained(os.path.join(staging, self.QUESTION_ENCODER_SUBFOLDER))
            self.generator.save_pretrained(os.path.join(staging, self.GENERATOR_SUBFOLDER))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "RagTokenizer":
        """Load both tokenizers from a directory in the original's layout (or a model id in the
        huggingface_hub cache; `cache_dir`, `revision`, `token`, `local_files_only` apply).

        `config` (a `RagConfig`) may be passed; otherwise the directory's `config.json` is read
        when present (it tells the tokenizer classes for directories without tokenizer configs).
        """
        from .hub import pop_hub_kwargs, resolve_folder

        from .errors import CheckpointNotFoundError
        from .storage import check_rag_config

        path = os.fspath(resolve_folder(pretrained_model_name_or_path, **pop_hub_kwargs(kwargs)))
        config = kwargs.pop("config", None)
        if config is not None and not (hasattr(config, "question_encoder") and hasattr(config, "generator")):
            raise TokenizerInputError(f"`config` must be a RagConfig, got {type(config).__name__}")
        if config is None and os.path.isfile(os.path.join(path, "config.json")):
            from .configuration_rag import RagConfig

            check_rag_config(path)  # another model's folder is named as such, not as a bad RagConfig
            config = RagConfig.from_pretrained(path)
        for sub in (cls.QUESTION_ENCODER_SUBFOLDER, cls.GENERATOR_SUBFOLDER):
            if os.path.isdir(path) and not os.path.isdir(os.path.join(path, sub)):
                found = sorted(os.listdir(path))
                raise CheckpointNotFoundError(
                    f"{path!r} has no {sub}/ folder: a RagTokenizer directory holds "
                    f"{cls.QUESTION_ENCODER_SUBFOLDER}/ and {cls.GENERATOR_SUBFOLDER}/; found "
                    f"{found[:12] if found else 'an empty folder'}"
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
            raise TokenizerInputError("RagTokenizer needs `text` (questions) and/or `text_target` (answers)")
        _check_text("text", text)
        _check_text("text_target", text_target)
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
        _check_text("src_texts", src_texts, allow_none=False)
        _check_text("tgt_texts", tgt_texts)
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


def _check_text(name: str, text: Any, allow_none: bool = True) -> None:
    """Text must be a string or a list of strings (or of pre-tokenized word lists), as the tokenizers take."""
    if text is None and allow_none:
        return
    if isinstance(text, str):
        return
    if isinstance(text, (list, tuple)) and all(
        isinstance(item, str) or (isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item))
        for item in text
    ):
        return
    found = type(text).__name__
    if isinstance(text, (list, tuple)):
        bad = next(item for item in text if not isinstance(item, (str, list, tuple)) or not isinstance(item, str)
                   and not all(isinstance(w, str) for w in item))
        found = f"a list holding {type(bad).__name__} {bad!r:.40}"
    raise TokenizerInputError(f"`{name}` must be a string or a list of strings, got {found}")


def _tokenize(tokenizer, text, *args, return_tensors=None, **kwargs) -> BatchEncoding:
    """`tokenizer(text, ...)`, with `return_tensors="tf"` also under transformers 5 (numpy, then TF)."""
    if return_tensors == "tf":
        return compat.batch_encoding(dict(tokenizer(text, *args, return_tensors="np", **kwargs)), "tf")
    return tokenizer(text, *args, return_tensors=return_tensors, **kwargs)

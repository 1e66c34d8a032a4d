"""Every exception the library raises on purpose, in one place, importable from `rag_core`.

Each class subclasses the built-in exception a caller would already catch for that kind of problem
(`ValueError` for bad values, `FileNotFoundError` for a missing file, ...) and `RagError`, so
`except rag_core.RagError` catches everything raised here and nothing else. Messages name the
argument or file at fault, what was expected and what was found.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class of every exception the library raises on purpose."""


# === Values and arguments ===
class RagInputError(RagError, ValueError):
    """Bad input to a RAG model; the message names the argument and what was expected."""


class RagConfigError(RagError, ValueError):
    """An invalid `RagConfig` value; the message names the field."""


class RetrievalInputError(RagInputError):
    """Bad input to a retriever or index call (question vectors, n_docs, passages)."""


class ContextInputError(RagInputError):
    """Bad passages, scores or question ids given to the context builder."""


class UnknownIndexError(RagError, ValueError):
    """`index_name` names no index kind."""


class UnsupportedModelError(RagError, ValueError):
    """A sub-configuration whose `model_type` the framework package does not implement."""


# === Files ===
class IndexNotFoundError(RagError, FileNotFoundError):
    """A file an index needs is missing; the message names the file and where it was looked for."""


class IndexFormatError(RagError, ValueError):
    """An index or passage file exists but cannot be used (corrupt, wrong columns, wrong sizes)."""


class IndexNotInitializedError(RagError, RuntimeError):
    """The index was built with `init_retrieval=False` and has not been loaded yet."""


class PassagesError(RagError, ValueError):
    """The passages input is unusable (format, columns, empty); the message says where."""


class OutputExistsError(RagError, FileExistsError):
    """The output already exists and `overwrite` was not given."""


class PickleNotAllowedError(RagError, ValueError):
    """Only pickled files were found and `allow_pickle=True` was not given."""


class WeightConversionError(RagError, ValueError):
    """A checkpoint that cannot be converted; the message names the weights and what was expected."""


class SubModelWeightError(RagError, ValueError):
    """Weights that do not fit a sub-model: missing, unexpected, or of the wrong shape (named)."""


# === Fine-tuning and evaluation ===
class TrainingDataError(RagError, ValueError):
    """A question/answer data file that cannot be read; the message names the file and the line number."""


class ResumeError(RagError, ValueError):
    """`--resume` cannot continue this run folder (no resumable checkpoint, or changed training settings)."""


# === Checkpoint files ===
class CheckpointError(RagError, ValueError):
    """A checkpoint file or folder exists but cannot be used (truncated, corrupt, of another model);
    the message names it, what was expected and what was found."""


class CheckpointNotFoundError(RagError, FileNotFoundError):
    """A file a checkpoint needs is missing (`config.json`, a weight shard); the message names it and
    the folder it was looked for in."""


class NotAFolderError(RagError, NotADirectoryError):
    """A path that must be a folder (where a checkpoint is saved or loaded) is an existing file."""


# === Serving an index with Ray ===
class MissingExtraError(RagError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class IndexServiceError(RagError, RuntimeError):
    """The Ray index service cannot be found, started or used as asked; the message says which service
    (name, namespace) and why."""


class ShardUnavailableError(IndexServiceError):
    """No replica of an index shard answered (each failed or timed out); the message names the shard,
    its id range, the service and the errors."""


# === Tokenizer ===
class TokenizerInputError(RagInputError):
    """Bad input to `RagTokenizer`: a missing or unusable sub-tokenizer, or text of the wrong type."""


# TensorFlow's autograph re-raises an exception raised while tracing a `tf.function` as a
# `StagingError` unless the exception carries `ag_pass_through`: with it, a bad argument found at
# trace time reaches the caller as the library's own exception class, as it does in eager mode.
RagError.ag_pass_through = True


__all__ = [name for name, value in dict(globals()).items() if isinstance(value, type) and issubclass(value, RagError)]

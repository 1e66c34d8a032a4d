"""`RagConfig`: the configuration shared by every RAG model class, in both frameworks.

The `config.json` it writes is the one transformers' own `RagConfig` writes (`model_type: rag`,
`question_encoder` and `generator` sub-configs and the same top-level keys), so checkpoints move
freely between the two. Fields added by this library (`question_encoder_pooling`,
`hnsw_ef_search`, `ivf_nprobe`) are plain extra keys that transformers keeps and ignores.

Example:
    >>> from transformers import BartConfig, DPRConfig
    >>> from rag_core import RagConfig
    >>> config = RagConfig.from_question_encoder_generator_configs(
    ...     DPRConfig(hidden_size=32), BartConfig(d_model=32), n_docs=3)
    >>> config.n_docs, config.generator.model_type
    (3, 'bart')
"""

from __future__ import annotations

import math
from typing import Any, Optional

from transformers import AutoConfig, PretrainedConfig

from .errors import RagConfigError  # noqa: F401 (re-exported)

INDEX_NAMES = ("exact", "compressed", "custom", "legacy")
QUESTION_POOLINGS = (None, "dpr", "cls", "mean", "pooler")


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RagConfigError(f"RagConfig.{name} must be an integer >= {minimum}, got {value!r}")


def _check_str(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        raise RagConfigError(f"RagConfig.{name} must be a string, got {type(value).__name__} {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise RagConfigError(f"RagConfig.{name} must be True or False, got {value!r}")


def _sub_config(name: str, value: Any) -> PretrainedConfig:
    """Accept a sub-config as a `PretrainedConfig` or as its `to_dict()` form (what config.json holds)."""
    if isinstance(value, PretrainedConfig):
        return value
    if not isinstance(value, dict):
        raise RagConfigError(f"RagConfig.{name} must be a PretrainedConfig or a dict, got {type(value).__name__}")
    value = dict(value)
    model_type = value.pop("model_type", None)
    if not model_type:
        raise RagConfigError(f"RagConfig.{name} has no 'model_type' (e.g. 'dpr', 'bert', 'bart', 't5')")
    try:
        return AutoConfig.for_model(model_type, **value)
    except ValueError as err:
        raise RagConfigError(f"RagConfig.{name}: unknown model_type {model_type!r}") from err


class RagConfig(PretrainedConfig):
    """Configuration of `RagModel`, `RagSequenceForGeneration`, `RagTokenForGeneration` and TF twins.

    Arguments are those of transformers' `RagConfig` (same names, same defaults), plus:

    - `question_encoder_pooling`: how a question vector is read off the question encoder:
      `"dpr"` (DPR's `pooler_output`), `"cls"` (first token of the last hidden state), `"mean"`
      (attention-masked mean, what sentence encoders such as MiniLM use), `"pooler"` (BERT's
      pooler). `None` picks `"dpr"` for a DPR encoder and `"cls"` otherwise.
    - `hnsw_ef_search`, `ivf_nprobe`: search settings of the faiss index (`None`: the index's own).
      Too low a value silently costs accuracy; they are settings, never hard-coded.
    """

    model_type = "rag"
    has_no_defaults_at_init = True
    # A declared field: transformers 5 refuses to save a config carrying generation parameters
    # (they belong in `generation_config`) unless the config class declares them; RAG keeps this
    # one in its config, as transformers 4's RagConfig did.
    forced_eos_token_id: Optional[int] = None

    def __init__(
        self,
        vocab_size: Optional[int] = None,
        is_encoder_decoder: bool = True,
        prefix: Optional[str] = None,
        bos_token_id: Optional[int] = None,
        pad_token_id: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        decoder_start_token_id: Optional[int] = None,
        title_sep: str = " / ",
        doc_sep: str = " // ",
        n_docs: int = 5,
        max_combined_length: int = 300,
        retrieval_vector_size: int = 768,
        retrieval_batch_size: int = 8,
        dataset: str = "wiki_dpr",
        dataset_split: str = "train",
        index_name: str = "compressed",
        index_path: Optional[str] = None,
        passages_path: Optional[str] = None,
        use_dummy_dataset: bool = False,
        reduce_loss: bool = False,
        label_smoothing: float = 0.0,
        do_deduplication: bool = True,
        exclude_bos_score: bool = False,
        do_marginalize: bool = False,
        output_retrieved: bool = False,
        use_cache: bool = True,
        forced_eos_token_id: Optional[int] = None,
        dataset_revision: Optional[str] = None,
        question_encoder_pooling: Optional[str] = None,
        hnsw_ef_search: Optional[int] = None,
        ivf_nprobe: Optional[int] = None,
        **kwargs,
    ):
        # transformers' PretrainedConfig builds an empty instance of the class on some paths
        # (`to_diff_dict`); that instance has no sub-configs, as in transformers' RagConfig.
        question_encoder = kwargs.pop("question_encoder", None)
        generator = kwargs.pop("generator", None)
        if question_encoder is None or generator is None:
            missing = [n for n, v in (("question_encoder", question_encoder), ("generator", generator)) if v is None]
            raise RagConfigError(
                f"RagConfig needs both sub-configurations; missing: {', '.join(missing)}. "
                "Use RagConfig.from_question_encoder_generator_configs(question_encoder_config, generator_config)."
            )
        # Set before the base initialiser: transformers 5 validates token ids through `to_dict()`
        # while it initialises, and that reads the sub-configs.
        self.question_encoder = _sub_config("question_encoder", question_encoder)
        self.generator = _sub_config("generator", generator)
        super().__init__(
            bos_token_id=bos_token_id,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id,
            forced_eos_token_id=forced_eos_token_id,
            is_encoder_decoder=is_encoder_decoder,
            prefix=prefix,
            vocab_size=vocab_size,
            **kwargs,
        )

        self.reduce_loss = reduce_loss
        self.label_smoothing = label_smoothing
        self.exclude_bos_score = exclude_bos_score
        self.do_marginalize = do_marginalize
        self.title_sep = title_sep
        self.doc_sep = doc_sep
        self.n_docs = n_docs
        self.max_combined_length = max_combined_length
        self.dataset = dataset
        self.dataset_split = dataset_split
        self.index_name = index_name
        self.retrieval_vector_size = retrieval_vector_size
        self.retrieval_batch_size = retrieval_batch_size
        self.passages_path = passages_path
        self.index_path = index_path
        self.use_dummy_dataset = use_dummy_dataset
        self.dataset_revision = dataset_revision
        self.output_retrieved = output_retrieved
        self.do_deduplication = do_deduplication
        self.use_cache = use_cache
        self.question_encoder_pooling = question_encoder_pooling
        self.hnsw_ef_search = hnsw_ef_search
        self.ivf_nprobe = ivf_nprobe
        # transformers 5's base initialiser drops generation parameters; set it here for both versions
        self.forced_eos_token_id = forced_eos_token_id
        if self.forced_eos_token_id is None:
            self.forced_eos_token_id = getattr(self.generator, "forced_eos_token_id", None)
        self.validate()

    def validate(self) -> None:
        """Raise `RagConfigError` naming the first invalid field."""
        _check_int("n_docs", self.n_docs, 1)
        _check_int("max_combined_length", self.max_combined_length, 1)
        _check_int("retrieval_vector_size", self.retrieval_vector_size, 1)
        _check_int("retrieval_batch_size", self.retrieval_batch_size, 1)
        _check_int("hnsw_ef_search", self.hnsw_ef_search, 1, allow_none=True)
        _check_int("ivf_nprobe", self.ivf_nprobe, 1, allow_none=True)
        for name in (
            "vocab_size", "bos_token_id", "pad_token_id", "eos_token_id", "decoder_start_token_id", "forced_eos_token_id"
        ):
            _check_int(name, getattr(self, name), 0, allow_none=True)
        for name in ("title_sep", "doc_sep"):  # joined into every context string
            _check_str(name, getattr(self, name), allow_none=False)
        for name in ("prefix", "index_path", "passages_path", "dataset", "dataset_split", "dataset_revision"):
            _check_str(name, getattr(self, name))
        for name in (
            "reduce_loss",
            "use_dummy_dataset",
            "do_deduplication",
            "exclude_bos_score",
            "do_marginalize",
            "output_retrieved",
            "use_cache",
        ):
            _check_bool(name, getattr(self, name))
        smoothing = self.label_smoothing
        if (
            isinstance(smoothing, bool)
            or not isinstance(smoothing, (int, float))
            or not math.isfinite(smoothing)
            or not 0.0 <= smoothing < 1.0
        ):
            raise RagConfigError(f"RagConfig.label_smoothing must be a number in [0, 1), got {smoothing!r}")
        if self.index_name not in INDEX_NAMES:
            raise RagConfigError(f"RagConfig.index_name must be one of {INDEX_NAMES}, got {self.index_name!r}")
        if self.question_encoder_pooling not in QUESTION_POOLINGS:
            raise RagConfigError(
                f"RagConfig.question_encoder_pooling must be one of {QUESTION_POOLINGS}, "
                f"got {self.question_encoder_pooling!r}"
            )

    @property
    def resolved_question_encoder_pooling(self) -> str:
        """The pooling actually used: the configured one, else `dpr` for DPR encoders and `cls` otherwise."""
        if self.question_encoder_pooling is not None:
            return self.question_encoder_pooling
        return "dpr" if self.question_encoder.model_type == "dpr" else "cls"

    @classmethod
    def from_question_encoder_generator_configs(
        cls, question_encoder_config: PretrainedConfig, generator_config: PretrainedConfig, **kwargs
    ) -> "RagConfig":
        """Build a `RagConfig` from the question encoder's and the generator's configurations."""
        for name, value in (("question_encoder_config", question_encoder_config), ("generator_config", generator_config)):
            if not isinstance(value, PretrainedConfig):
                raise RagConfigError(
                    f"{name} must be a transformers PretrainedConfig (e.g. DPRConfig, BartConfig), got "
                    f"{type(value).__name__}"
                )
        return cls(question_encoder=question_encoder_config.to_dict(), generator=generator_config.to_dict(), **kwargs)

    # === Files ===
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "RagConfig":
        """transformers' `from_pretrained`. A local folder's `config.json` is checked first, so a folder
        of another model, one without `config.json` or with broken JSON raises an error naming it
        (`CheckpointError`, `CheckpointNotFoundError`) rather than a complaint about missing fields."""
        import os

        from .storage import check_rag_config

        if os.path.exists(os.fspath(pretrained_model_name_or_path)) and not kwargs.get("gguf_file"):
            check_rag_config(pretrained_model_name_or_path, kwargs.get("subfolder"))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """transformers' `save_pretrained`, atomic (`rag_core.storage.atomic_save`): `config.json` is
        written beside the folder and renamed into it; other files there are kept."""
        import os

        from .storage import atomic_save

        if push_to_hub:  # the repository is named after the folder, not after the temporary one
            kwargs.setdefault("repo_id", os.path.basename(os.path.abspath(os.fspath(save_directory))))
        with atomic_save(save_directory) as staging:
            super().save_pretrained(staging, push_to_hub=push_to_hub, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["question_encoder"] = self.question_encoder.to_dict()
        output["generator"] = self.generator.to_dict()
        return output

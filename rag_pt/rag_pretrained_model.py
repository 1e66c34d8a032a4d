"""`RagPreTrainedModel`: loading, saving and construction shared by the three PyTorch RAG models.

Checkpoints are transformers' own layout: `config.json` (`model_type: rag`) and
`model.safetensors` (or a legacy `pytorch_model.bin`, read with `torch.load(weights_only=True)`)
with keys `rag.question_encoder.*` / `rag.generator.*` for the generation heads and
`question_encoder.*` / `generator.*` for `RagModel`, so checkpoints move between these classes and
transformers' `RagModel`, `RagSequenceForGeneration` and `RagTokenForGeneration` both ways.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedModel

from rag_core import RagConfig
from rag_core.arguments import check_labels, generator_max_positions
from rag_core.modeling import pop_prefixed, resolve_config

# The two generation heads: a checkpoint trained as one is a poor fit for the other's decoding.
_HEADS = ("RagSequenceForGeneration", "RagTokenForGeneration")


class RagPreTrainedModel(PreTrainedModel):
    """Base of `RagModel`, `RagSequenceForGeneration` and `RagTokenForGeneration`.

    Example:
        >>> model = RagTokenForGeneration.from_pretrained_question_encoder_generator(
        ...     "path/to/dpr-question-encoder", "path/to/bart", n_docs=5)
        >>> model.save_pretrained("./rag")
        >>> model = RagTokenForGeneration.from_pretrained("./rag", retriever=retriever)
    """

    config_class = RagConfig
    base_model_prefix = "rag"
    # As the original: the sub-models pick their attention implementation themselves.
    _supports_flash_attn = True
    _supports_sdpa = True

    @classmethod
    def from_pretrained_question_encoder_generator(
        cls,
        question_encoder_pretrained_model_name_or_path: Optional[str] = None,
        generator_pretrained_model_name_or_path: Optional[str] = None,
        retriever: Any = None,
        **kwargs,
    ) -> "RagPreTrainedModel":
        """Build a RAG model from a pretrained question encoder and a pretrained seq2seq generator.

        `question_encoder_*` / `generator_*` keyword arguments go to the sub-models (`question_encoder_model=`
        / `generator_model=` pass ready models); the others update the `RagConfig` (e.g. `n_docs=5`).
        """
        question_kwargs = pop_prefixed(kwargs, "question_encoder_")
        generator_kwargs = pop_prefixed(kwargs, "generator_")

        question_encoder = question_kwargs.pop("model", None)
        if question_encoder is None:
            if question_encoder_pretrained_model_name_or_path is None:
                raise ValueError(
                    "pass question_encoder_pretrained_model_name_or_path, or a model as question_encoder_model="
                )
            question_encoder = _load_sub_model(AutoModel, question_encoder_pretrained_model_name_or_path, question_kwargs)
        generator = generator_kwargs.pop("model", None)
        if generator is None:
            if generator_pretrained_model_name_or_path is None:
                raise ValueError("pass generator_pretrained_model_name_or_path, or a model as generator_model=")
            generator = _load_sub_model(AutoModelForSeq2SeqLM, generator_pretrained_model_name_or_path, generator_kwargs)

        config = kwargs.pop("config", None)
        if config is None:
            config = RagConfig.from_question_encoder_generator_configs(question_encoder.config, generator.config, **kwargs)
        return cls(config=config, question_encoder=question_encoder, generator=generator, retriever=retriever)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`, with five additions.

        - `from_tf=True` loads a TensorFlow checkpoint (`tf_model.h5`) through `rag_pt.convert`.
        - `pytorch_model.bin` is only ever read with `torch.load(weights_only=True)` (no pickled code).
        - `retriever=` is attached to the loaded model as it is: transformers would deep-copy it
          with the other keyword arguments.
        - Loading a RAG-Token checkpoint into `RagSequenceForGeneration` (or the reverse) warns: the
          weights fit, but the model was trained for the other marginalisation.
        - A local folder is checked before transformers reads it: a folder of another model or with no
          `config.json`, broken JSON, a truncated or corrupt `model.safetensors`, a shard index that
          lists a missing shard raise `CheckpointError` / `CheckpointNotFoundError` naming the file.
        """
        if kwargs.pop("from_tf", False):  # convert tf_model.h5 through the table, then load
            from .convert import from_tf_checkpoint

            return from_tf_checkpoint(cls.from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs)
        if kwargs.get("weights_only", True) is not True:
            raise ValueError("weights_only=False is not supported: .bin checkpoints are read with weights_only=True")
        kwargs["weights_only"] = True
        _check_local_checkpoint(pretrained_model_name_or_path, kwargs)
        retriever = kwargs.pop("retriever", None)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info=True
        _warn_on_head_mismatch(cls, model.config)
        if retriever is not None:
            model.set_retriever(retriever)
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' `save_pretrained` (same arguments), atomic (`rag_core.storage.atomic_save`).

        Everything is written into a temporary folder beside `save_directory` and then moved in:
        other files there (a tokenizer's, a retriever's) are kept, older weight files (other shards,
        another format) are removed once the new weights are in place, and a failure at any point leaves the
        previous checkpoint byte-identical. A file at `save_directory` raises `NotAFolderError`
        (transformers only logs it and saves nothing). Exceptions: `distributed_checkpoint=True` and
        the processes other than the main one write into `save_directory` directly, as transformers
        does, since every process must see the same folder.
        """
        from rag_core.storage import atomic_save, check_save_directory

        check_save_directory(save_directory)
        is_main_process = args[0] if args else kwargs.get("is_main_process", True)
        if not is_main_process or kwargs.get("distributed_checkpoint"):
            return super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("push_to_hub"):  # the repository is named after the folder, not the temporary one
            kwargs.setdefault("repo_id", os.path.basename(os.path.abspath(os.fspath(save_directory))))
        with atomic_save(save_directory) as staging:
            return super().save_pretrained(staging, *args, **kwargs)


def _check_local_checkpoint(name_or_path, kwargs: dict) -> None:
    """A local checkpoint folder's `config.json` (unless a config is given) and safetensors weights,
    checked before transformers reads them: unusable files raise an error naming them."""
    from rag_core.storage import check_rag_config, check_weight_files

    path = os.fspath(name_or_path)
    if not os.path.isdir(path) or kwargs.get("gguf_file"):
        return  # a hub id (or a single file): transformers resolves and reports it
    if kwargs.get("subfolder"):
        path = os.path.join(path, kwargs["subfolder"])
    if kwargs.get("config") is None:
        check_rag_config(path)
    variant = kwargs.get("variant")
    check_weight_files(path, (f"model.{variant}.safetensors" if variant else "model.safetensors",))


def _warn_on_head_mismatch(cls: type, config: PretrainedConfig) -> None:
    saved = [name for name in (getattr(config, "architectures", None) or []) if name in _HEADS]
    if cls.__name__ in _HEADS and saved and cls.__name__ not in saved:
        warnings.warn(
            f"this checkpoint was saved from {saved[0]} and is loaded into {cls.__name__}: the weights fit, but "
            "the model was trained with the other marginalisation over passages; check that this is intended",
            UserWarning,
            stacklevel=3,
        )


def _load_sub_model(auto_class: type, name_or_path: str, kwargs: dict) -> PreTrainedModel:
    from rag_core.storage import check_weight_files

    if os.path.isdir(os.fspath(name_or_path)):
        check_weight_files(os.path.join(os.fspath(name_or_path), kwargs.get("subfolder") or ""))
    if "config" not in kwargs:
        config, kwargs = AutoConfig.from_pretrained(name_or_path, **kwargs, return_unused_kwargs=True)
        kwargs["config"] = config
    return auto_class.from_pretrained(name_or_path, **kwargs)


class _RagHead(RagPreTrainedModel):
    """What `RagSequenceForGeneration` and `RagTokenForGeneration` share: a `RagModel` under `self.rag`
    (hence the `rag.*` weight keys) and access to its parts."""

    def __init__(
        self,
        config: Optional[PretrainedConfig] = None,
        question_encoder: Optional[PreTrainedModel] = None,
        generator: Optional[PreTrainedModel] = None,
        retriever: Any = None,
        **kwargs,
    ):
        from .rag_model import RagModel

        # === Config ===
        config = resolve_config(config, question_encoder, generator, kwargs)
        super().__init__(config)
        # === Submodules ===
        self.rag = RagModel(config=config, question_encoder=question_encoder, generator=generator, retriever=retriever)
        # transformers 5 expects it (it records the tied weights that saving and loading rely on); on 4.x
        # it leaves ready sub-models as they are (their weights are marked initialised)
        self.post_init()

    def set_retriever(self, retriever: Any) -> None:
        self.rag.set_retriever(retriever)

    def set_context_encoder_for_training(self, ctx_encoder: PreTrainedModel) -> None:
        self.rag.set_context_encoder_for_training(ctx_encoder)

    @property
    def retriever(self) -> Any:
        return self.rag.retriever

    @property
    def generator(self) -> PreTrainedModel:
        return self.rag.generator

    @property
    def question_encoder(self) -> PreTrainedModel:
        return self.rag.question_encoder

    def get_input_embeddings(self):
        return self.rag.generator.get_input_embeddings()

    def get_output_embeddings(self):
        return self.rag.generator.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        return self.rag.generator.set_output_embeddings(new_embeddings)

    def _check_labels(self, labels) -> None:
        check_labels(tuple(labels.shape), generator_max_positions(self.config.generator))

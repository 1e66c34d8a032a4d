"""What a fine-tuning or evaluation run is made of, resolved from its arguments once for both
frameworks: the `RagConfig`, the two tokenizers and the retriever. The framework packages only
build the model (`from_pretrained` or `from_pretrained_question_encoder_generator`) on top."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from ..errors import IndexNotFoundError
from ..index.custom import INDEX_FILE, MANIFEST, PASSAGES_DIR
from ..index.sharded import is_sharded_folder, read_shards_manifest


@dataclasses.dataclass
class Components:
    config: Any
    question_tokenizer: Any
    generator_tokenizer: Any
    retriever: Any
    checkpoint: Optional[str] = None  # a RAG checkpoint folder, or None when built from two sub-models
    question_encoder_path: Optional[str] = None
    generator_path: Optional[str] = None

    @property
    def tokenizer(self):
        from ..tokenization_rag import RagTokenizer

        return RagTokenizer(self.question_tokenizer, self.generator_tokenizer)

    def load_model(self, model_type: str, token_class: Any, sequence_class: Any):
        """The run's RAG model (`rag_token` / `rag_sequence`: one of the framework's two classes), from
        the RAG checkpoint or from the two sub-model folders, with the run's retriever attached."""
        cls = token_class if model_type == "rag_token" else sequence_class
        if self.checkpoint is not None:
            return cls.from_pretrained(self.checkpoint, config=self.config, retriever=self.retriever)
        return cls.from_pretrained_question_encoder_generator(
            self.question_encoder_path, self.generator_path, retriever=self.retriever, config=self.config)

    def retriever_for(self, index_path: str):
        """A retriever like the run's, over another index folder (the config is copied, not changed)."""
        import copy

        from ..retrieval_rag import RagRetriever

        config = copy.deepcopy(self.config)
        for key, value in index_settings(index_path).items():
            setattr(config, key, value)
        return RagRetriever(config, self.question_tokenizer, self.generator_tokenizer)

    @property
    def decoder_start_token_id(self) -> int:
        generator = self.config.generator
        start = generator.decoder_start_token_id
        if start is None:
            start = generator.pad_token_id if generator.model_type == "t5" else generator.eos_token_id
        return int(start)


def index_settings(index_path: str) -> dict:
    """`RagConfig` fields for an index folder: a `build_index` output (manifest.json), or a folder
    holding `passages/` (save_to_disk) and `index.faiss` (the original's custom layout)."""
    index_path = os.path.abspath(os.fspath(index_path))
    if is_sharded_folder(index_path):  # a `build_index --shards` folder
        dim = read_shards_manifest(index_path).get("dim")
        settings = {"index_name": "custom", "passages_path": index_path, "index_path": None}
        return {**settings, "retrieval_vector_size": int(dim)} if dim else settings
    if os.path.isfile(os.path.join(index_path, MANIFEST)):
        from ..index.custom import read_manifest

        settings = {"index_name": "custom", "passages_path": index_path, "index_path": None}
        dim = (read_manifest(index_path) or {}).get("dim")
        if dim:
            settings["retrieval_vector_size"] = int(dim)
        return settings
    passages, faiss_file = os.path.join(index_path, PASSAGES_DIR), os.path.join(index_path, INDEX_FILE)
    if os.path.isdir(passages) and os.path.isfile(faiss_file):
        return {"index_name": "custom", "passages_path": passages, "index_path": faiss_file}
    raise IndexNotFoundError(
        f"--index_path {index_path!r} is not an index folder: expected a `python -m rag_core.build_index` output "
        f"({MANIFEST}) or a folder with {PASSAGES_DIR}/ and {INDEX_FILE}"
    )


def resolve_components(args, n_docs: Optional[int] = None) -> Components:
    """Config, tokenizers and retriever for `args` (a finetune or evaluate namespace).

    `n_docs` (default `args.n_docs`) and `max_combined_length`, the index and the label smoothing
    (when the namespace has it) override the checkpoint's config.
    """
    from transformers import AutoConfig, AutoTokenizer

    from ..configuration_rag import RagConfig
    from ..retrieval_rag import RagRetriever
    from ..tokenization_rag import RagTokenizer

    overrides = {}
    if args.index_path is not None:
        overrides.update(index_settings(args.index_path))
    n_docs = n_docs if n_docs is not None else args.n_docs
    if n_docs is not None:
        overrides["n_docs"] = n_docs
    if args.max_combined_length is not None:
        overrides["max_combined_length"] = args.max_combined_length
    if getattr(args, "label_smoothing", None) is not None:
        overrides["label_smoothing"] = float(args.label_smoothing)
    if args.model_name_or_path is not None:
        path = os.fspath(args.model_name_or_path)
        config = RagConfig.from_pretrained(path)
        for key, value in overrides.items():
            setattr(config, key, value)
        config.validate()
        tokenizer = RagTokenizer.from_pretrained(path, config=config)
        question_tokenizer, generator_tokenizer = tokenizer.question_encoder, tokenizer.generator
    else:
        question_config = AutoConfig.from_pretrained(args.question_encoder_name_or_path)
        generator_config = AutoConfig.from_pretrained(args.generator_name_or_path)
        config = RagConfig.from_question_encoder_generator_configs(question_config, generator_config, **overrides)
        question_tokenizer = AutoTokenizer.from_pretrained(args.question_encoder_name_or_path)
        generator_tokenizer = AutoTokenizer.from_pretrained(args.generator_name_or_path)
    index = None
    if getattr(args, "ray_index", None):
        from ..serving import RayIndex

        index = RayIndex(args.ray_index, namespace=args.ray_namespace, address=args.ray_address)
    retriever = RagRetriever(config, question_tokenizer, generator_tokenizer, index=index)
    return Components(config, question_tokenizer, generator_tokenizer, retriever,
                      checkpoint=args.model_name_or_path, question_encoder_path=args.question_encoder_name_or_path,
                      generator_path=args.generator_name_or_path)

"""Checkpoint folders for the TF models: where a name points (a local folder or the huggingface_hub
cache), what its `config.json` holds, how a RAG checkpoint's weight names map onto a model's
sub-models, and stand-alone sub-model folders (DPR, BERT, BART, T5) in transformers' layout."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from rag_core.configuration_rag import RagConfig
from rag_core.hub import pop_hub_kwargs, resolve_folder

from .weights import SubModelWeightError, load_pt_weights

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"


def with_prefix(tensors: Mapping[str, np.ndarray], prefix: str) -> Mapping[str, np.ndarray]:
    """A `RagModel` checkpoint (no `rag.`) read by a head, or a head's read by `RagModel`."""
    names = list(tensors)
    if prefix and names and not any(n.startswith(prefix) for n in names):
        return {prefix + n: v for n, v in tensors.items()}
    if not prefix and names and all(n.startswith("rag.") for n in names):
        return {n[len("rag."):]: v for n, v in tensors.items()}
    return tensors


def check_weights(model, tensors, prefix: str, source: str) -> None:
    """Raise what `load_pt_weights` would raise, without assigning anything."""
    rows = model.pt_weight_table()
    aliases = model.pt_weight_aliases() if hasattr(model, "pt_weight_aliases") else {}
    for row in rows:
        name = prefix + row.pt_name
        if name not in tensors:
            alternatives = [prefix + a for a, c in aliases.items() if c == row.pt_name and prefix + a in tensors]
            if not alternatives:
                raise SubModelWeightError(f"{source}: missing weight {name!r} ({type(model).__name__})")
            name = alternatives[0]
        shape = tuple(np.shape(tensors[name]))
        expected = tuple(row.variable.shape)
        if row.transform == "transpose":
            expected = expected[::-1]
        if shape != expected:
            raise SubModelWeightError(f"{source}: weight {name!r} has shape {shape}, expected {expected} for this "
                                      "configuration")


def untie_t5_head_if_the_checkpoint_does(config: RagConfig, tensors, prefix: str) -> None:
    """T5 v1.1 / flan checkpoints carry their own `lm_head.weight`; transformers unties the head when
    it loads one (whatever `tie_word_embeddings` says), and so does this."""
    if config.generator.model_type != "t5" or prefix + "lm_head.weight" not in tensors:
        return
    from .t5 import lm_head_is_tied

    if not lm_head_is_tied(tensors, prefix):
        config.generator.tie_word_embeddings = False


def resolve_checkpoint(name_or_path, kwargs: dict) -> Path:
    """A local folder, or a hub id resolved in the local huggingface_hub cache; the hub options
    (`cache_dir`, `revision`, `token`, `local_files_only`, `subfolder`) are taken from `kwargs`."""
    return resolve_folder(name_or_path, **pop_hub_kwargs(kwargs))


def load_rag_config(directory: Path) -> RagConfig:
    """The `RagConfig` of a checkpoint folder; a folder without `config.json` (`CheckpointNotFoundError`),
    with broken JSON or holding another model (`CheckpointError`) is named with what it holds."""
    from rag_core.storage import check_rag_config

    check_rag_config(directory)
    return RagConfig.from_pretrained(directory)


def has_pt_weights(directory: Path) -> bool:
    return any((directory / n).is_file() for n in (SAFETENSORS_NAME, SAFETENSORS_NAME + ".index.json",
                                                   "model.safetensors.index.json", "pytorch_model.bin",
                                                   "pytorch_model.bin.index.json"))


def load_sub_model(build, name_or_path, config=None, allow_pickle: bool = False):
    """A stand-alone sub-model checkpoint (DPR, BERT, BART, T5 folder in transformers' layout)."""
    from transformers import AutoConfig

    from rag_core.convert import read_pt_weights

    directory = resolve_checkpoint(name_or_path, {})
    config = config if config is not None else AutoConfig.from_pretrained(directory)
    model = build(config)
    model.ensure_built()
    tensors = read_pt_weights(directory, allow_pickle=allow_pickle)
    names = {row.pt_name for row in model.pt_weight_table()}
    prefix = next((p for p in ("", "bert.", "model.") if any(p + n in tensors for n in names)), "")
    if prefix == "" and "model.shared.weight" in names and "shared.weight" in tensors:
        tensors = {("model." + k if not k.startswith(("lm_head.", "final_logits_bias")) else k): v
                   for k, v in tensors.items()}  # a BartModel without its head
    if "final_logits_bias" in names and "final_logits_bias" not in tensors:
        tensors = dict(tensors, final_logits_bias=np.zeros((1, config.vocab_size), np.float32))
    load_pt_weights(model, tensors, prefix, source=str(directory))
    return model

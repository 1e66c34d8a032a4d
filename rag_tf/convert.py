"""transformers' TensorFlow checkpoint layout (`tf_model.h5`), read and written without tf-keras.

The TF models keep their weights under transformers' PyTorch names, so `model.safetensors` written
by PyTorch (ours or transformers') loads directly and `from_pt=True` needs no conversion. What
remains is the layout transformers 4.x's TensorFlow RAG classes use, `tf_model.h5` (Keras 2 weight
names, as published RAG checkpoints ship): `read_tf_h5` maps it to PyTorch names through the
explicit table of `rag_core.weight_conversion`, and `write_tf_h5` writes it for users of
transformers 4.x (`save_pretrained(..., save_format="h5")`). numpy and h5py only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TF_H5_NAME = "tf_model.h5"


def read_tf_h5(directory) -> dict[str, np.ndarray]:
    """The weights of `directory/tf_model.h5` (a RAG checkpoint) keyed by transformers' PyTorch names."""
    from rag_core.convert import checkpoint_entries, read_tf_weights
    from rag_core.weight_conversion import tf_to_pt

    directory = Path(directory)
    entries, _ = checkpoint_entries(directory, framework="tf")
    return tf_to_pt(read_tf_weights(directory / TF_H5_NAME, entries), entries)


def write_tf_h5(directory, weights: dict, config, architecture: str) -> Path:
    """Write PyTorch-named `weights` as `directory/tf_model.h5` in transformers' TF layout for `architecture`
    ("RagModel", "RagSequenceForGeneration" or "RagTokenForGeneration")."""
    from rag_core.convert import TF_INSTANCE_NAMES, write_tf_weights
    from rag_core.weight_conversion import pt_to_tf, rag_entries

    entries = rag_entries(config.question_encoder, config.generator, architecture)
    return write_tf_weights(Path(directory) / TF_H5_NAME, pt_to_tf(weights, entries), entries,
                            TF_INSTANCE_NAMES[architecture])

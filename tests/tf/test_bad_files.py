"""`from_pretrained` of the TF models names an unusable weights file (truncated `tf_model.h5` or
`model.safetensors`), instead of h5py's or safetensors' own message without the file."""

from __future__ import annotations

import pytest

from rag_core import CheckpointError
from tests.harness.files import truncate
from tests.tf import support


@pytest.mark.parametrize("save_format, name", [("h5", "tf_model.h5"), ("safetensors", "model.safetensors")])
def test_a_truncated_weights_file_is_named(tmp_path, token_pair, save_format, name):
    token_pair[0].save_pretrained(tmp_path / "ck", save_format=save_format)
    truncate(tmp_path / "ck" / name)
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'ck' / name} .*(truncated|not a readable HDF5 file)"):
        support.ours_class("token").from_pretrained(tmp_path / "ck")

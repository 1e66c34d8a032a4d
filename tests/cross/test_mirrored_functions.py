"""Same name, same contract: module-level functions that rag_pt and rag_tf both define take the same
parameters, and the loss functions compute the same numbers from the same (unshifted) labels."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

from tests.cross.tolerances import assert_close

# modules whose twins agree function for function (retrieval_bridge is left out: the two `retrieve`
# functions still name their parameters differently)
MIRRORED = ["losses", "generation_utils", "rag_model", "rag_pretrained_model"]


def _functions(module) -> dict:
    return {name: f for name, f in vars(module).items()
            if inspect.isfunction(f) and f.__module__ == module.__name__ and not name.startswith("_")}


@pytest.mark.parametrize("module", MIRRORED)
def test_functions_of_the_same_name_take_the_same_parameters(module):
    pt, tf = (_functions(importlib.import_module(f"{package}.{module}")) for package in ("rag_pt", "rag_tf"))
    shared = sorted(set(pt) & set(tf))
    differences = {name: (list(inspect.signature(pt[name]).parameters), list(inspect.signature(tf[name]).parameters))
                   for name in shared}
    differences = {name: sig for name, sig in differences.items() if sig[0] != sig[1]}
    assert not differences, f"{module}: {differences}"
    if module == "losses":
        assert {"shift_targets_left", "marginalize_token_logprobs", "token_nll", "sequence_nll",
                "sequence_token_logprobs"} <= set(shared)


def test_loss_functions_agree_on_unshifted_labels():
    import tensorflow as tf
    import torch

    from rag_pt import losses as pt_losses
    from rag_tf import losses as tf_losses

    rng = np.random.default_rng(0)
    batch, n_docs, length, vocab, pad, bos = 3, 2, 5, 13, 1, 0
    logits = (2 * rng.standard_normal((batch * n_docs, length, vocab))).astype(np.float32)
    scores = rng.standard_normal((batch, n_docs)).astype(np.float32)
    labels = rng.integers(3, vocab, (batch, length))
    labels[:, 1] = bos
    labels[1, 3:] = pad
    for name in ("token_nll", "sequence_nll"):
        for options in ({}, {"epsilon": 0.1, "reduce_loss": True, "exclude_bos_score": True}):
            kwargs = dict(n_docs=n_docs, pad_token_id=pad, bos_token_id=bos, **options)
            got_pt = getattr(pt_losses, name)(torch.from_numpy(logits), torch.from_numpy(scores),
                                              torch.from_numpy(labels), **kwargs)
            got_tf = getattr(tf_losses, name)(tf.constant(logits), tf.constant(scores),
                                              tf.constant(labels.astype(np.int32)), **kwargs)
            assert_close("loss", got_tf.numpy(), got_pt.numpy(), f"{name} {options}")
    target = labels[:, [1, 2, 3, 4, 0]].copy()
    target[:, -1] = pad
    np.testing.assert_array_equal(pt_losses.shift_targets_left(torch.from_numpy(labels), pad).numpy(), target)
    np.testing.assert_array_equal(tf_losses.shift_targets_left(tf.constant(labels), pad).numpy(), target)
    for smooth in (False, True):
        rows = np.repeat(target, n_docs, axis=0)
        pt_tok, pt_smooth = pt_losses.sequence_token_logprobs(torch.from_numpy(logits), torch.from_numpy(rows), smooth)
        tf_tok, tf_smooth = tf_losses.sequence_token_logprobs(tf.constant(logits), tf.constant(rows), smooth)
        assert_close("loss", tf_tok.numpy(), pt_tok.numpy(), f"token log-probs smooth={smooth}")
        assert (pt_smooth is None) == (tf_smooth is None) == (not smooth)
        if smooth:
            assert_close("loss", tf_smooth.numpy(), pt_smooth.numpy(), "vocabulary sums")

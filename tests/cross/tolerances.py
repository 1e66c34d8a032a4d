"""The one table of cross-framework tolerances and known divergences, each with its reason.

Every comparison in `tests/cross/` reads its bounds from `TOLERANCES`; `assert_close` applies an
entry. A known divergence between rag_pt and rag_tf would be an entry with `divergence` set (what
differs, and why it is accepted): numerically there are none today; structurally, one TF-only
module, the Keras members, and one PyTorch-only GenerationMixin hook.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    reason: str
    divergence: Optional[str] = None  # a known, accepted difference between the frameworks
    names: tuple[str, ...] = ()  # for structural divergences: the modules / members concerned


_FLOAT32 = (
    "float32 on CPU: the same maths in a different kernel order (oneDNN matmuls in TF, MKL/ATen in "
    "PyTorch) differs by a few ulps per op; the project sets 1e-4 for the TensorFlow twin"
)

TOLERANCES = {
    # --- weights ---
    "weights": Tolerance(0.0, 0.0, "conversion copies or transposes float32 arrays: bit-identical by construction"),
    # --- forward ---
    "question_vectors": Tolerance(1e-4, 0.0, _FLOAT32),
    "doc_scores": Tolerance(1e-4, 0.0, _FLOAT32 + "; inner products of 16-dim vectors"),
    "logits": Tolerance(1e-4, 1e-4, _FLOAT32 + "; the sharpened tiny generators give logits of magnitude ~10, "
                        "so a relative term of 1e-4 is added to the absolute 1e-4"),
    "loss": Tolerance(1e-4, 1e-4, _FLOAT32 + "; summed losses (reduce_loss=True) add B terms, hence rtol"),
    "gradients": Tolerance(1e-4, 4.0, "context-encoder weight gradients (tests/cross/test_context_encoder_training.py), "
                           "bounded against PyTorch in float64: |TF - f64| <= rtol * |PyTorch f32 - f64| + atol * the "
                           "tensor's largest f64 gradient. Some entries are sums that cancel (the [CLS] embedding "
                           "under cls pooling), where float32 itself is off by percents in both frameworks; a wrong "
                           "pooling is off by ~100%"),
    # --- stand-alone question encoder (the packaged MiniLM, 6 layers, 384 dims, real weights) ---
    "minilm_hidden": Tolerance(1e-4, 0.0, _FLOAT32 + "; 6 real layers instead of 1 tiny one"),
    # --- generation scores (unsharpened two-layer generators) ---
    "sequences_scores": Tolerance(1e-4, 1e-5, _FLOAT32 + "; sums of up to ~10 token log-probabilities of "
                                  "magnitude ~7 each (nearly flat tiny generators), hence rtol"),
    "step_scores": Tolerance(1e-4, 1e-5, _FLOAT32 + "; one step's processed log-probabilities / logits "
                             "(entries set to -inf by a processor must be -inf in both)"),
    # --- generation: token ids must be identical ---
    "generated_ids": Tolerance(0.0, 0.0, "greedy and beam outputs identical token for token; the "
                               "sharpened tiny generators keep the top candidates far apart compared with float noise"),
    # --- structure: what exists in one framework only (tests/cross/test_api_mirror.py) ---
    "tf_only_modules": Tolerance(
        0.0, 0.0,
        "RAG-Token decoding as a fixed-shape tf.while_loop so it compiles with XLA; PyTorch "
        "decodes with transformers' GenerationMixin instead (rag_tf/__init__.py records the quirk)",
        divergence="rag_tf/decoding.py has no rag_pt twin; rag_tf/models holds rag_tf's own Keras 3 BART, T5, "
                   "BERT and DPR (rag_pt uses transformers' PyTorch ones)",
        names=("decoding", "models"),
    ),
    "tf_only_members": Tolerance(
        0.0, 0.0,
        "Keras: fit/evaluate/predict call train_step/test_step/predict_step, compile and metrics are "
        "Keras' training API; build creates variables lazily; input_signature is "
        "the TF serving signature; ensure_built creates every variable before weights are assigned, and "
        "pt_weights / load_pt_weights are state_dict / load_state_dict under transformers' PyTorch names. "
        "PyTorch has no counterpart of any of them (torch modules own their parameters from __init__)",
        divergence="TF classes define these members; PyTorch classes do not",
        names=("train_step", "test_step", "predict_step", "compile", "metrics", "build", "input_signature",
               "ensure_built", "pt_weights", "load_pt_weights"),
    ),
    "pt_only_members": Tolerance(
        0.0, 0.0,
        "GenerationMixin hook: transformers' PyTorch generate calls it once per decoding step to build "
        "the model inputs. TF RAG-Token decodes with its own fixed-shape tf.while_loop (rag_tf/decoding.py, "
        "see tf_only_modules), which never calls such a hook, so a TF twin would be dead code",
        divergence="RagTokenForGeneration defines these members; TFRagTokenForGeneration does not",
        names=("prepare_inputs_for_generation",),
    ),
    "loader_signatures": Tolerance(
        0.0, 0.0,
        "rag_pt's from_pretrained / save_pretrained pass their options through to transformers' "
        "PreTrainedModel (device maps, sharding, hub upload, ...); rag_tf's are its own (safetensors or "
        "h5, `retriever`, `allow_pickle`, `from_pt` named explicitly). Both accept the original's calls",
        divergence="the keyword arguments of from_pretrained and save_pretrained differ",
        names=("from_pretrained", "save_pretrained"),
    ),
}


def assert_close(quantity: str, actual, desired, what: str = "") -> float:
    """Compare with the table's bound for `quantity`; returns the largest absolute difference seen."""
    tol = TOLERANCES[quantity]
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, f"{quantity} {what}: shape {actual.shape} != {desired.shape}"
    if tol.atol == 0.0 and tol.rtol == 0.0:
        np.testing.assert_array_equal(actual, desired, err_msg=f"{quantity} {what}")
    else:
        # infinities (scores of padding rows, tokens a processor banned) must match exactly
        np.testing.assert_allclose(actual, desired, atol=tol.atol, rtol=tol.rtol, err_msg=f"{quantity} {what}")
    finite = np.isfinite(actual) & np.isfinite(desired) if actual.dtype.kind == "f" else np.ones(actual.shape, bool)
    diff = float(np.max(np.abs(actual[finite].astype(np.float64) - desired[finite]), initial=0.0))
    LARGEST[quantity] = max(LARGEST.get(quantity, 0.0), diff)
    return diff


# Largest difference seen per quantity in this session (printed by tests/cross/conftest.py).
LARGEST: dict[str, float] = {}

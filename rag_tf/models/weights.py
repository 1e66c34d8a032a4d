"""Reading and writing a Keras sub-model's weights under transformers' PyTorch names (numpy only).

Every sub-model implements `pt_weight_table()`: a list of `WeightRow(pt_name, variable, transform)`,
one row per Keras variable, in a fixed order. `transform` is `IDENTITY` or `TRANSPOSE` (PyTorch
`nn.Linear.weight` is `(out, in)`, a Keras `Dense` kernel `(in, out)`). Tied weights are one Keras
variable; the other PyTorch names of the same tensor are listed by `pt_weight_aliases()`
(`{alias: canonical}`): read when present (and checked equal), never written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from rag_core.errors import SubModelWeightError  # noqa: F401 (re-exported)

IDENTITY = "identity"
TRANSPOSE = "transpose"


@dataclasses.dataclass(frozen=True)
class WeightRow:
    pt_name: str
    variable: Any  # a keras.Variable
    transform: str = IDENTITY


def _to_pt(array: np.ndarray, transform: str) -> np.ndarray:
    return np.ascontiguousarray(array.T) if transform == TRANSPOSE else array


def _from_pt(array: np.ndarray, transform: str) -> np.ndarray:
    return np.ascontiguousarray(array.T) if transform == TRANSPOSE else array


def pt_weights(model, prefix: str = "") -> dict[str, np.ndarray]:
    """`{prefix + pt_name: array}` in PyTorch layout, one entry per Keras variable (no aliases)."""
    return {prefix + row.pt_name: _to_pt(np.asarray(row.variable.numpy()), row.transform)
            for row in model.pt_weight_table()}


def load_pt_weights(model, tensors: Mapping[str, np.ndarray], prefix: str = "", source: str = "checkpoint") -> list:
    """Assign every variable of `model` from `tensors[prefix + pt_name]` (PyTorch layout).

    Checks everything before assigning anything, so a failure leaves the model unchanged: a missing
    name, a shape that does not fit (naming the weight and both shapes), and tied aliases that
    disagree raise `SubModelWeightError`. Returns the names under `prefix` that were not used
    (the caller decides whether they are an error).
    """
    rows = model.pt_weight_table()
    aliases = model.pt_weight_aliases() if hasattr(model, "pt_weight_aliases") else {}
    canonical_of = {prefix + alias: prefix + canonical for alias, canonical in aliases.items()}
    updates, missing = [], []
    for row in rows:
        name = prefix + row.pt_name
        if name not in tensors:
            # a tied weight saved under one of its aliases only
            alias = next((a for a, c in canonical_of.items() if c == name and a in tensors), None)
            if alias is None:
                missing.append(name)
                continue
            name = alias
        value = _from_pt(np.asarray(tensors[name]), row.transform)
        expected = tuple(row.variable.shape)
        if tuple(value.shape) != expected:
            raise SubModelWeightError(
                f"{source}: weight {name!r} has shape {tuple(np.asarray(tensors[name]).shape)}, expected "
                f"{tuple(_to_pt(np.zeros(expected), row.transform).shape)} for this configuration"
            )
        updates.append((row.variable, value))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SubModelWeightError(f"{source}: missing weights {shown}")
    for alias, canonical in canonical_of.items():
        if alias in tensors and canonical in tensors and not np.array_equal(
                np.asarray(tensors[alias]), np.asarray(tensors[canonical])):
            raise SubModelWeightError(f"{source}: tied weights {alias!r} and {canonical!r} differ")
    for variable, value in updates:
        variable.assign(value.astype(variable.dtype) if hasattr(variable, "dtype") else value)
    used = {prefix + row.pt_name for row in rows} | set(canonical_of)
    return sorted(name for name in tensors if name.startswith(prefix) and name not in used)

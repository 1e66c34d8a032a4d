"""PyTorch models: every invalid input of the shared table is refused before any torch op, with the
library error and the message the TensorFlow twin gives (tests/bad_input/test_tf_models.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rag_core.errors import RagError, RagInputError
from tests.bad_input.support import MODEL_CASES, base_inputs

pytestmark = pytest.mark.pt


@pytest.fixture(scope="module")
def models():
    """Bare models (no retriever) of the three classes; the heads' RagModel is `head.rag`."""
    import torch

    from rag_pt import RagSequenceForGeneration, RagTokenForGeneration
    from tests.harness.configs import tiny_rag_config

    torch.manual_seed(0)
    config = tiny_rag_config("dpr", "bart")
    token = RagTokenForGeneration(config).eval()
    sequence = RagSequenceForGeneration(config).eval()
    return {"token": token, "sequence": sequence, "model": token.rag}


def _to_torch(kwargs: dict) -> dict:
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) and v.dtype != object else v for k, v in kwargs.items()}


@pytest.fixture
def no_torch_ops(models):
    """Fails the test if a sub-model runs: the input must be refused before any computation."""
    def refuse(module, args):
        raise AssertionError(f"{type(module).__name__} ran before the input was refused")

    handles = [part.register_forward_pre_hook(refuse) for model in models.values()
               for part in (model.question_encoder, model.generator)]
    yield
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("case", [c.param() for c in MODEL_CASES])
def test_invalid_model_input_is_named(models, case, no_torch_ops):
    model = models[case.head]
    call = model.generate if case.entry == "generate" else model
    with pytest.raises(case.error, match=case.match) as info:
        call(**_to_torch(case.inputs()))
    assert isinstance(info.value, RagError)


# PyTorch-only: the models take torch tensors, not numpy arrays or lists.
@pytest.mark.parametrize(
    "name, value",
    [
        pytest.param("context_input_ids", "numpy", id="context_input_ids-numpy-array"),
        pytest.param("labels", "list", id="labels-python-list"),
    ],
)
def test_a_non_tensor_argument_is_named(models, name, value, no_torch_ops):
    inputs = _to_torch({k: v for k, v in base_inputs().items() if k != "input_ids"})
    raw = base_inputs()[name]
    inputs[name] = raw if value == "numpy" else raw.tolist()
    with pytest.raises(RagInputError, match=rf"`{name}` must be a torch.Tensor, got (ndarray|list)"):
        models["token"](**inputs)

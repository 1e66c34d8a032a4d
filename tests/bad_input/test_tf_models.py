"""TensorFlow models: the shared table of invalid inputs, eagerly and inside a `tf.function`, where the
error must reach the caller at trace time as the library's class (not autograph's `StagingError`)
with the message rag_pt gives (tests/bad_input/test_pt_models.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rag_core.errors import RagError
from tests.bad_input.support import FORWARD, MODEL_CASES

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def models():
    """Bare models (no retriever) of the three classes; the heads' TFRagModel is `head.rag`."""
    from tests.harness.configs import tiny_rag_config
    from tests.tf import support

    config = tiny_rag_config("dpr", "bart")
    token = support.build_ours(config, "token")
    sequence = support.build_ours(config, "sequence")
    return {"token": token, "sequence": sequence, "model": token.rag}


def _to_tf(kwargs: dict) -> dict:
    import tensorflow as tf

    return {k: tf.constant(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


@pytest.mark.parametrize("case", [c.param() for c in MODEL_CASES])
def test_invalid_model_input_is_named_eagerly(models, case):
    model = models[case.head]
    call = model.generate if case.entry == "generate" else model
    with pytest.raises(case.error, match=case.match) as info:
        call(**_to_tf(case.inputs()))
    assert isinstance(info.value, RagError)


@pytest.mark.parametrize("case", [c.param() for c in FORWARD])
def test_invalid_model_input_is_named_while_tracing(models, case):
    import tensorflow as tf

    model = models[case.head]
    traced = tf.function(lambda kwargs: model(**kwargs))
    with pytest.raises(case.error, match=case.match) as info:
        traced(_to_tf(case.inputs()))
    assert isinstance(info.value, RagError)


def test_unknown_dimensions_are_skipped_and_known_ones_checked(models):
    """With a dynamic batch (None) the batch checks wait for data; a known wrong dtype is refused at trace time."""
    import tensorflow as tf

    model = models["token"]

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, 3], tf.float32)])
    def traced(context_input_ids, doc_scores):
        return model(context_input_ids=context_input_ids, doc_scores=doc_scores,
                     decoder_input_ids=tf.cast(context_input_ids[:2, :1], tf.int32)).logits

    with pytest.raises(RagError, match=r"`context_input_ids` must hold integer token ids, got dtype float32"):
        traced.get_concrete_function()


def test_a_ragged_nested_list_is_named(models):
    ragged = [[5, 6, 7], [5, 6]]
    base = {k: v for k, v in FORWARD[0].inputs().items() if k in ("context_input_ids", "doc_scores")}
    with pytest.raises(RagError, match=r"`labels` is not a rectangular array"):
        models["token"](**_to_tf(base), labels=ragged)

"""Markers shared by the suites.

`requires_transformers_tf`: the test builds transformers' own TensorFlow classes (`TFAutoModel`,
`TFRagModel`, ...) as its oracle. They exist only in transformers 4.x with TensorFlow and tf-keras
(the oracle environment); elsewhere the test is skipped, with one reason for all of them. The check
runs when such a test is set up, so collecting a suite never imports TensorFlow.

    from tests.harness.markers import requires_transformers_tf

    @requires_transformers_tf
    def test_layout_matches_transformers_tf_model(...): ...
"""

from __future__ import annotations

import functools

import pytest

TRANSFORMERS_TF_REASON = "needs transformers 4.x TensorFlow classes (oracle environment)"


@functools.lru_cache(maxsize=None)
def has_transformers_tf() -> bool:
    """Whether transformers' TensorFlow model classes can be imported here."""
    from rag_core import compat

    if compat.TRANSFORMERS_5:  # transformers 5 has no TensorFlow classes
        return False
    try:
        from transformers.utils import is_tf_available

        if not is_tf_available():  # TensorFlow missing, or USE_TF=0
            return False
        from transformers import TFPreTrainedModel  # noqa: F401  (needs tf-keras under Keras 3)
    except (ImportError, RuntimeError, ValueError):
        return False
    return True


requires_transformers_tf = pytest.mark.usefixtures("transformers_tf_classes")

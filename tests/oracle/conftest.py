"""The oracle suites: transformers 4.57's TensorFlow RAG classes (only in the oracle environment,
`make test-oracle`) against ours on the same weights. The model-pair fixtures are the TF suite's;
there, `support.build_pair` also loads the oracle from our `tf_model.h5` when transformers 4.x is
installed."""

from tests.tf.conftest import bart_contexts, bart_labels, sequence_pair, token_pair  # noqa: F401

"""(Helpers writing a sub-model: read CONTRACT_FOR_HELPERS.md in this folder first: environment, rules, the
generator contract and the tests expected.)

rag_tf's own Keras 3 sub-models: BART and T5 generators, BERT and DPR question encoders.

Each file holds one architecture and reads the weights of transformers' PyTorch models by name
(`weights.py`), so one `model.safetensors` serves both frameworks. `registry.py` maps a
sub-config's `model_type` to the class that implements it.
"""

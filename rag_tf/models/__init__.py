"""rag_tf's own Keras 3 sub-models: BART and T5 generators, BERT and DPR question encoders.

Each file holds one architecture and reads the weights of transformers' PyTorch models by name
(`weights.py`), so one `model.safetensors` serves both frameworks. `registry.py` maps a
sub-config's `model_type` to the class that implements it.

Every generator implements the same contract, which `rag_tf.decoding` relies on:
`call(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
past_key_values, use_cache, output_attentions, output_hidden_states, training)` returning
`Seq2SeqLMOutput`; `get_encoder()`; and static-cache decoding, `init_cache(encoder_hidden,
encoder_mask, max_length)` (self-attention slots `(layers, 2, rows, heads, max_length, head_dim)`,
cross-attention keys and values computed once) and `decode_step(token_ids, cache, index,
encoder_mask)` (writes slot `index` in place, attends to slots `<= index`, returns the next-token
logits and the cache). Every sub-model has `ensure_built()`, `pt_weight_table()` and
`pt_weight_aliases()`.
"""

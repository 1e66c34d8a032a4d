"""Sampling (temperature, top-k, top-p, seed) and bad_words_ids in the TF decoding loop."""

import numpy as np
import tensorflow as tf


def _ctx(bart_contexts):
    return {k: tf.constant(v) for k, v in bart_contexts.items()}


def test_sampling_is_reproducible_by_seed_and_degenerates_to_greedy(token_pair, bart_contexts):
    model, ctx = token_pair[0], _ctx(bart_contexts)
    greedy = model.generate(**ctx, max_length=8).numpy()
    first = model.generate(**ctx, max_length=8, do_sample=True, seed=3, temperature=3.0).numpy()
    again = model.generate(**ctx, max_length=8, do_sample=True, seed=3, temperature=3.0).numpy()
    np.testing.assert_array_equal(first, again)
    draws = {model.generate(**ctx, max_length=8, do_sample=True, seed=s, temperature=3.0).numpy().tobytes()
             for s in range(6)}
    assert len(draws) > 1  # a hot distribution: different seeds give different samples
    # one candidate left: sampling is greedy decoding
    np.testing.assert_array_equal(model.generate(**ctx, max_length=8, do_sample=True, top_k=1, seed=1).numpy(),
                                  greedy)
    np.testing.assert_array_equal(model.generate(**ctx, max_length=8, do_sample=True, top_p=1e-6, seed=2).numpy(),
                                  greedy)


def test_sampling_compiles_with_xla_and_is_reproducible_there(token_pair, bart_contexts):
    """XLA's stateless generator draws other numbers than TensorFlow's CPU kernel for the same seed,
    so XLA samples are compared with XLA samples; with one candidate left they equal greedy."""
    model, ctx = token_pair[0], _ctx(bart_contexts)
    kwargs = dict(max_length=8, do_sample=True, seed=7, top_k=20, top_p=0.9, temperature=1.5)
    np.testing.assert_array_equal(model.generate(**ctx, jit_compile=True, **kwargs).numpy(),
                                  model.generate(**ctx, jit_compile=True, **kwargs).numpy())
    np.testing.assert_array_equal(
        model.generate(**ctx, jit_compile=True, max_length=8, do_sample=True, top_k=1, seed=5).numpy(),
        model.generate(**ctx, max_length=8).numpy())


def test_bad_words_are_never_generated(token_pair, bart_contexts):
    model, ctx = token_pair[0], _ctx(bart_contexts)
    greedy = model.generate(**ctx, max_length=8, num_beams=2).numpy()
    banned = int(greedy[0, 1])
    out = model.generate(**ctx, max_length=8, num_beams=2, bad_words_ids=[[banned]]).numpy()
    assert banned not in out[:, 1:].tolist()[0] and banned not in out[:, 1:].ravel().tolist()
    # a two-token bad word bans its second token only right after its first
    pair = [int(greedy[0, 1]), int(greedy[0, 2])]
    out = model.generate(**ctx, max_length=8, num_beams=2, bad_words_ids=[pair]).numpy()
    for row in out:
        body = row[1:].tolist()
        assert not any(body[i] == pair[0] and body[i + 1] == pair[1] for i in range(len(body) - 1))


def test_rag_sequence_rescoring_is_not_retraced_per_call(sequence_pair):
    """The rescoring graph (the generator's scoring pass) is cached per model: new context and
    candidate lengths relax its shapes once (reduce_retracing) instead of retracing on every call."""
    model = sequence_pair[0]
    rng = np.random.default_rng(0)
    for length in (4, 6, 5, 7):
        model.generate(context_input_ids=rng.integers(5, 900, (6, length)).astype(np.int32),
                       context_attention_mask=np.ones((6, length), np.int32), doc_scores=np.zeros((2, 3), np.float32),
                       max_length=6)
    traces = [f.experimental_get_tracing_count() for key, f in model.__dict__["_rag_decode_functions"].items()
              if key[0] == "sequence-rescore"]
    assert traces and max(traces) <= 2, traces

"""rag_core.generation: the RAG-Sequence candidate bookkeeping both frameworks share, against
brute-force loops in plain Python (no framework; the frameworks' scoring pass is a fake hook)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag_core import generation as g

PAD, BOS, EOS, START = 1, 0, 2, 2


def _candidates(rng, batch, count, length, vocab=6):
    """Random candidates with many duplicates (a small vocabulary), start token first."""
    cands = rng.integers(3, 3 + vocab, size=(batch, count, length))
    cands[:, :, 0] = START
    cands[:, ::2, 1] = BOS
    return cands


def test_deduplication_keeps_the_first_of_each_distinct_candidate():
    rng = np.random.default_rng(0)
    cands = _candidates(rng, batch=3, count=8, length=3, vocab=2)
    same = g.same_sequences(cands)
    first = g.first_occurrences(same)
    for b in range(3):
        seen = []
        for i in range(8):
            row = cands[b, i].tolist()
            for j in range(8):
                assert same[b, i, j] == (row == cands[b, j].tolist())
            assert first[b, i] == (row not in seen)
            seen.append(row)
    assert not first.all()  # the test data hold duplicates


def test_lengths_and_undoing_the_length_penalty():
    sequences = np.array([
        [START, 5, 6, EOS, PAD, PAD],  # 3 generated tokens, EOS included
        [START, 5, 6, 7, 8, 9],        # cut at max_length: 5
        [START, EOS, PAD, PAD, PAD, PAD],
        [START, 5, PAD, PAD, PAD, PAD],  # no EOS: the non-pad tokens
    ])
    np.testing.assert_array_equal(g.generated_lengths(sequences, EOS, PAD), [3, 5, 1, 1])
    np.testing.assert_array_equal(g.generated_lengths(sequences, [7, EOS], PAD), [3, 3, 1, 1])
    sums = np.array([-3.0, -7.5, -0.25, -2.0])
    for penalty in (1.0, 0.5, 2.0):
        normalised = sums / np.array([3, 5, 1, 1], dtype=np.float64) ** penalty
        np.testing.assert_allclose(g.beam_logprob_sums(normalised, sequences, EOS, PAD, penalty), sums, rtol=1e-12)


@pytest.mark.parametrize("own", [False, True])
def test_rescore_plan_rows_targets_and_bos_exclusion(own):
    n_docs, beams = 2, 2
    cands = np.array([
        [[START, BOS, 5, EOS], [START, BOS, 6, EOS], [START, BOS, 5, EOS], [START, 7, EOS, PAD]],
        [[START, BOS, 5, EOS], [START, BOS, 8, EOS], [START, BOS, 9, EOS], [START, BOS, 3, EOS]],
    ])
    scored = np.array([[True, True, False, False], [True, True, True, True]])
    plan = g.rescore_plan(cands, scored, n_docs, PAD, BOS, own_passage_only=own, num_beams=beams)
    np.testing.assert_array_equal(plan.question, [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(plan.slot, [0, 1, 0, 1, 2, 3])
    np.testing.assert_array_equal(plan.labels, cands[plan.question, plan.slot])
    np.testing.assert_array_equal(plan.target[:, :-1], plan.labels[:, 1:])
    np.testing.assert_array_equal(plan.target[:, -1], PAD)
    np.testing.assert_array_equal(plan.keep, plan.target != PAD)
    if own:  # slot // beams is the passage that produced the candidate
        np.testing.assert_array_equal(plan.rows[:, 0], [0, 0, 2, 2, 3, 3])
        assert not plan.exclude_first.any()
    else:
        np.testing.assert_array_equal(plan.rows, [[0, 1], [0, 1], [2, 3], [2, 3], [2, 3], [2, 3]])
        # question 0's scored candidates all start with BOS (its fourth, unscored, does not)
        np.testing.assert_array_equal(plan.exclude_first, True)
    scored[0, 3] = True
    plan = g.rescore_plan(cands, scored, n_docs, PAD, BOS)
    np.testing.assert_array_equal(plan.exclude_first, [False] * 3 + [True] * 4)
    assert not g.rescore_plan(cands, scored, n_docs, PAD, None).exclude_first.any()  # T5: no BOS


def _brute_sequence_score(token_lp, smooth_lp, doc_lp, keep, exclude_first, eps, vocab):
    """One candidate, by loops: logsumexp over passages of (sum of kept log-probs + log p(z))."""
    def lse(values):
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))

    lls, smooths = [], []
    for n in range(token_lp.shape[0]):
        lls.append(sum(token_lp[n, t] for t in range(keep.size) if keep[t] and not (t == 0 and exclude_first))
                   + doc_lp[n])
        smooths.append(sum(smooth_lp[n, t] for t in range(keep.size) if keep[t]) + vocab * doc_lp[n])
    return (1 - eps) * lse(lls) + eps / vocab * lse(smooths) if eps else lse(lls)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_sequence_scores_are_the_marginal_with_label_smoothing(eps):
    rng = np.random.default_rng(1)
    vocab, n_docs = 11, 3
    cands = _candidates(rng, batch=2, count=n_docs * 2, length=5)
    cands[1, 3, 3:] = PAD
    plan = g.rescore_plan(cands, np.ones((2, 6), bool), n_docs, PAD, BOS)
    token_lp = np.log(rng.uniform(0.01, 1.0, size=(12, n_docs, 5)))
    smooth_lp = -rng.uniform(20, 40, size=(12, n_docs, 5))
    token_lp[0, 1, 1] = -np.inf  # an impossible token under one passage: no NaN
    doc_lp = g.log_softmax(rng.standard_normal((2, n_docs)), axis=1)
    got = g.sequence_scores(plan, token_lp, smooth_lp, doc_lp, vocab, eps)
    for k in range(12):
        want = _brute_sequence_score(token_lp[k], smooth_lp[k], doc_lp[plan.question[k]], plan.keep[k],
                                     plan.exclude_first[k], eps, vocab)
        np.testing.assert_allclose(got[k], want, rtol=1e-12, err_msg=str(k))
    assert np.isfinite(got).all()


def test_fast_scores_collect_the_passages_that_produced_a_candidate():
    rng = np.random.default_rng(2)
    n_docs, beams = 3, 2
    cands = _candidates(rng, batch=2, count=n_docs * beams, length=3, vocab=2)
    same = g.same_sequences(cands)
    own = rng.standard_normal((2, n_docs * beams))
    doc_lp = g.log_softmax(rng.standard_normal((2, n_docs)), axis=1)
    got = g.fast_scores(own, doc_lp, same, beams)
    alone = g.fast_scores(own, doc_lp, None, beams)
    for b in range(2):
        for i in range(n_docs * beams):
            terms = [own[b, j] + doc_lp[b, j // beams] for j in range(n_docs * beams)
                     if cands[b, j].tolist() == cands[b, i].tolist()]
            np.testing.assert_allclose(got[b, i], math.log(sum(math.exp(t) for t in terms)), rtol=1e-12)
            np.testing.assert_allclose(alone[b, i], own[b, i] + doc_lp[b, i // beams], rtol=1e-12)


def test_select_top_orders_breaks_ties_by_position_and_pads():
    cands = np.arange(2 * 4 * 3).reshape(2, 4, 3)
    scores = np.array([[-1.0, -0.5, -np.inf, -0.5], [-2.0, -np.inf, -np.inf, -np.inf]])
    ids, top = g.select_top(cands, scores, 3, PAD)
    np.testing.assert_array_equal(top, [[-0.5, -0.5, -1.0], [-2.0, -np.inf, -np.inf]])
    np.testing.assert_array_equal(ids, [cands[0, 1], cands[0, 3], cands[0, 0], cands[1, 0], [PAD] * 3, [PAD] * 3])


@pytest.mark.parametrize("budget", [1, 10_000, 2**20, None])
def test_chunks_stay_within_the_budget(budget):
    per, length, vocab = 5, 30, 50_000
    chunk = g.rescore_chunk_candidates(per, length, vocab, itemsize=4, budget_bytes=budget)
    one = per * length * vocab * 4
    limit = g.RESCORE_CHUNK_BYTES if budget is None else budget
    assert chunk >= 1
    assert chunk == 1 or chunk * one <= limit
    assert (chunk + 1) * one > limit
    assert g.RESCORE_CHUNK_BYTES == 128 * 2**20


def _table_scorer(table, calls):
    """A fake generator: log p(token | position) from `table[row]` `(S, V)`, whatever the prefix."""
    def score(plan, with_smooth):
        calls.append((plan.rows.copy(), with_smooth))
        logp = table[plan.rows]  # (K, P, S, V)
        token = np.take_along_axis(logp, np.broadcast_to(plan.target[:, None, :, None], logp.shape[:3] + (1,)), -1)
        return token[..., 0], (logp.sum(-1) if with_smooth else None)
    return score


@pytest.mark.parametrize("rescore,beam", [("thorough", True), ("thorough", False), ("fast", True), ("fast", False)])
@pytest.mark.parametrize("dedup", [True, False])
def test_rank_candidates_against_enumeration(rescore, beam, dedup):
    rng = np.random.default_rng(3)
    batch, n_docs, beams, length, vocab = 2, 3, 2 if beam else 1, 4, 6
    cands = _candidates(rng, batch, n_docs * beams, length, vocab=2)
    cands[1, :, 1] = BOS  # every candidate of question 1 starts with BOS: its BOS position is dropped
    cands = cands.reshape(-1, length)
    table = g.log_softmax(2 * rng.standard_normal((batch * n_docs, length, vocab)), axis=-1)
    doc_scores = rng.standard_normal((batch, n_docs))
    beam_sums = rng.uniform(-6, -1, size=cands.shape[0])
    lengths = g.generated_lengths(cands, EOS, PAD)
    calls = []
    ids, top = g.rank_candidates(
        cands, doc_scores, _table_scorer(table, calls), num_beams=beams, rescore=rescore, do_deduplication=dedup,
        num_return_sequences=2, pad_token_id=PAD, bos_token_id=BOS, vocab_size=vocab, epsilon=0.1,
        sequences_scores=beam_sums / lengths**1.5 if beam else None, eos_token_ids=EOS, length_penalty=1.5)
    assert (len(calls) == 0) == (rescore == "fast" and beam)  # beam scores need no forward pass
    doc_lp = g.log_softmax(doc_scores, axis=1)
    per_question = cands.reshape(batch, n_docs * beams, length)
    for b in range(batch):
        scored = {}
        for i, cand in enumerate(per_question[b].tolist()):
            key = tuple(cand) if dedup else (i,)
            target = cand[1:] + [PAD]
            if rescore == "thorough":
                if key in scored:
                    continue
                exclude = all(c[1] == BOS for c in per_question[b].tolist())  # question 1 only
                rows = table[b * n_docs:(b + 1) * n_docs]
                token = np.array([[rows[n, t, target[t]] for t in range(length)] for n in range(n_docs)])
                smooth = rows.sum(-1)
                keep = np.array(target) != PAD
                scored[key] = _brute_sequence_score(token, smooth, doc_lp[b], keep, exclude, 0.1, vocab)
            else:
                row = b * n_docs + i // beams
                own = (beam_sums[b * n_docs * beams + i] if beam else
                       sum(table[row, t, target[t]] for t in range(length) if target[t] != PAD))
                scored[key] = np.logaddexp(scored.get(key, -np.inf), own + doc_lp[b, i // beams])
        ranked = sorted(scored.items(), key=lambda kv: -kv[1])[:2]
        want = [v for _, v in ranked]
        np.testing.assert_allclose(top[b], want, rtol=1e-10, err_msg=f"question {b}")
        if len(set(np.round(want, 9))) == len(want):  # no tie: the ids are determined
            for r, (key, _) in enumerate(ranked):
                expected = list(key) if dedup else per_question[b, key[0]].tolist()
                np.testing.assert_array_equal(ids[b * 2 + r], expected)

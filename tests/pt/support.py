"""Helpers of the PyTorch suite: tiny model pairs (ours + the oracle on the same weights), contexts,
the oracle's retriever on the harness index, and numpy references of the RAG maths.

The oracle is transformers' own PyTorch RAG (`transformers.RagTokenForGeneration`, ...): tests may
import it, the library never does.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from tests.harness.configs import tiny_rag_config
from tests.harness.retrieval import tiny_index_paths

OURS = {"model": "RagModel", "token": "RagTokenForGeneration", "sequence": "RagSequenceForGeneration"}


def ours_class(head: str):
    import rag_pt

    return getattr(rag_pt, OURS[head])


def oracle_class(head: str):
    import transformers

    return getattr(transformers, OURS[head])


def sharpen(config) -> None:
    """Larger random weights: peaked next-token distributions, so greedy/beam choices are not decided
    by float noise between two correct implementations (tiny random models are nearly uniform)."""
    gen = config.generator
    if gen.model_type == "bart":
        gen.init_std = 0.3
    else:
        gen.initializer_factor = 8.0


def build_pair(question_encoder="dpr", generator="bart", head="token", seed=0, passages_dir=None, **config_kwargs):
    """(ours, oracle, config): our model with random weights, and the oracle loaded from its checkpoint."""
    if passages_dir is not None:
        config_kwargs = {**tiny_index_paths(passages_dir), **config_kwargs}
    config = tiny_rag_config(question_encoder, generator, **config_kwargs)
    sharpen(config)
    torch.manual_seed(seed)
    ours = ours_class(head)(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        oracle = oracle_class(head).from_pretrained(folder).eval()
    if not hasattr(oracle.config.generator, "bos_token_id"):
        # transformers 5's T5Config has no `bos_token_id`, which its RAG-Sequence loss reads
        oracle.config.generator.bos_token_id = None
    return ours, oracle, config


def oracle_retriever(config, question_encoder_tokenizer, generator_tokenizer):
    """transformers' RagRetriever over the same `custom` index files as ours (config's paths)."""
    import transformers

    hf_config = transformers.RagConfig(**config.to_dict())
    return transformers.RagRetriever(
        hf_config, question_encoder_tokenizer=question_encoder_tokenizer, generator_tokenizer=generator_tokenizer
    )


def make_contexts(generator_tokenizer, batch_size=2, n_docs=3, seed=0, length=None):
    """Precomputed contexts: `(B*N, L)` ids and mask (padded to the longest) and `(B, N)` scores.

    With `length`, every context is truncated to `length` tokens (all are longer): no padding.
    """
    from tests.harness.passages import PASSAGES

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(PASSAGES), size=batch_size * n_docs)
    texts = [f"{PASSAGES[p][0]} / {PASSAGES[p][1]} // question {i // n_docs}" for i, p in enumerate(picks)]
    enc = generator_tokenizer(texts, padding=True, truncation=length is not None, max_length=length, return_tensors="pt")
    if length is not None:
        assert bool(enc["attention_mask"].all()), "a context is shorter than `length`"
    doc_scores = torch.tensor(rng.standard_normal((batch_size, n_docs)), dtype=torch.float32)
    return {
        "context_input_ids": enc["input_ids"],
        "context_attention_mask": enc["attention_mask"],
        "doc_scores": doc_scores,
    }


def make_labels(generator_tokenizer, answers):
    return generator_tokenizer(list(answers), padding=True, return_tensors="pt")["input_ids"]


def question_ids(question_encoder_tokenizer, questions):
    enc = question_encoder_tokenizer(list(questions), padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# === numpy references of the maths ===
def np_log_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_logsumexp(x, axis):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_target(labels, pad):
    labels = np.asarray(labels)
    return np.concatenate([labels[:, 1:], np.full((labels.shape[0], 1), pad)], axis=1)


def np_marginalize(seq_logits, doc_scores, n_docs):
    lp = np_log_softmax(seq_logits)
    b = lp.shape[0] // n_docs
    lp = lp.reshape(b, n_docs, *lp.shape[1:])
    doc_lp = np_log_softmax(doc_scores, axis=1)
    return np_logsumexp(lp + doc_lp[:, :, None, None], axis=1)


def np_token_nll(seq_logits, doc_scores, labels, n_docs, pad, eps=0.0, reduce=False, exclude_bos=False, bos=None):
    target = np_target(labels, pad)
    m = np_marginalize(numpy(seq_logits), numpy(doc_scores), n_docs)  # (B, T, V)
    keep = target != pad
    tok = np.take_along_axis(m, target[..., None], axis=-1)[..., 0] * keep
    if exclude_bos and bos is not None and (target[:, 0] == bos).all():
        tok = tok[:, 1:]
    ll = tok.sum(1)
    smooth = (m.sum(-1) * keep).sum(1)
    return _np_finish(ll, smooth, eps, m.shape[-1], reduce)


def np_sequence_nll(seq_logits, doc_scores, labels, n_docs, pad, eps=0.0, reduce=False, exclude_bos=False, bos=None):
    target = np_target(labels, pad)
    lp = np_log_softmax(numpy(seq_logits))
    b, t, v = target.shape[0], lp.shape[1], lp.shape[2]
    lp = lp.reshape(b, n_docs, t, v)
    doc_lp = np_log_softmax(numpy(doc_scores), axis=1)
    keep = (target != pad)[:, None, :]
    tok = np.take_along_axis(lp, np.repeat(target[:, None, :, None], n_docs, axis=1), axis=-1)[..., 0] * keep
    if exclude_bos and bos is not None and (target[:, 0] == bos).all():
        tok = tok[:, :, 1:]
    ll = np_logsumexp(tok.sum(-1) + doc_lp, axis=1)
    smooth = np_logsumexp((lp.sum(-1) * keep).sum(-1) + v * doc_lp, axis=1)
    return _np_finish(ll, smooth, eps, v, reduce)


def _np_finish(ll, smooth, eps, vocab, reduce):
    nll, smooth_loss = -ll, -smooth
    if reduce:
        nll, smooth_loss = nll.sum(), smooth_loss.sum()
    return (1.0 - eps) * nll + eps / vocab * smooth_loss


def tmpdir():
    return tempfile.mkdtemp(prefix="rag_pt_")


def listdir(path):
    return sorted(os.listdir(path))


# === brute force of RAG-Sequence generation (no code of the model's `generate`) ===
def rag_sequence_brute_force(model, context, rescore: str, num_beams: int, max_length: int) -> list:
    """Per question, `[(candidate ids, score)]` best first: the candidates from the generator's own
    `generate` on every context, scored by the model's forward with `labels` (`-loss`, thorough,
    with `exclude_bos_score=True` over the question's distinct candidates) or by a teacher-forced
    pass under each passage that produced them plus `log p(z|x)`, summed over those passages (fast).
    `context`: numpy arrays or tensors. Disable forced EOS for "fast" with beams: a beam cut at
    `max_length` then scores its last token as decoded."""
    ids, mask, doc_scores = (torch.as_tensor(np.asarray(context[k])) for k in
                             ("context_input_ids", "context_attention_mask", "doc_scores"))
    batch, n_docs = doc_scores.shape
    pad = model.config.generator.pad_token_id
    with torch.no_grad():
        candidates = model.generator.generate(input_ids=ids, attention_mask=mask, num_beams=num_beams,
                                              num_return_sequences=num_beams, max_length=max_length)
    candidates = candidates.view(batch, n_docs * num_beams, -1)
    doc_lp = torch.log_softmax(doc_scores.double(), 1)
    ranked = []
    for b in range(batch):
        scores = {}
        if rescore == "fast":
            rows = torch.tensor([b * n_docs + i // num_beams for i in range(n_docs * num_beams)])
            labels = candidates[b]
            with torch.no_grad():
                logits = model.generator(input_ids=ids[rows], attention_mask=mask[rows], decoder_input_ids=labels).logits
            target = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], pad)], 1)
            picked = torch.log_softmax(logits.double(), -1).gather(-1, target[:, :, None])[..., 0]
            own = picked.where(target != pad, 0.0).sum(1)
            for i, cand in enumerate(map(tuple, labels.tolist())):
                term = float(own[i] + doc_lp[b, i // num_beams])
                scores[cand] = float(np.logaddexp(scores.get(cand, -np.inf), term))
        else:
            unique = torch.tensor(list(dict.fromkeys(map(tuple, candidates[b].tolist()))))
            rows = torch.arange(b * n_docs, (b + 1) * n_docs).repeat(len(unique))
            with torch.no_grad():
                loss = model(context_input_ids=ids[rows], context_attention_mask=mask[rows],
                             doc_scores=doc_scores[b].repeat(len(unique), 1), labels=unique, exclude_bos_score=True,
                             reduce_loss=False).loss
            scores = {tuple(c): -float(l) for c, l in zip(unique.tolist(), loss)}
        ranked.append(sorted(scores.items(), key=lambda kv: -kv[1]))
    return ranked


def check_ranking(expected: list, sequences, sequences_scores, num_return_sequences: int, pad: int,
                  rtol: float = 1e-5, atol: float = 1e-4, what: str = "") -> None:
    """`generate`'s `(B*R, S)` ids and `(B*R,)` scores are the top R of `expected` (fewer distinct
    candidates: rows of padding scored -inf)."""
    ids = np.asarray(sequences).reshape(len(expected), num_return_sequences, -1)
    scores = np.asarray(sequences_scores).reshape(len(expected), num_return_sequences)
    for b, ranked in enumerate(expected):
        want = ranked[:num_return_sequences]
        want += [((pad,) * ids.shape[-1], -np.inf)] * (num_return_sequences - len(want))
        np.testing.assert_allclose(scores[b], [s for _, s in want], rtol=rtol, atol=atol, err_msg=f"{what} {b}")
        np.testing.assert_array_equal(ids[b], np.array([c for c, _ in want]), err_msg=f"{what} {b}")

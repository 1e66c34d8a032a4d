"""The RAG losses as tensor functions: marginalisation over passages and the two NLLs.

Shapes: B questions, N passages per question, T target positions, V vocabulary. `seq_logits` are
the generator's logits for every (question, passage) pair, `(B*N, T, V)`, rows grouped by question;
`doc_scores` are the `(B, N)` question/passage inner products. `labels` are what the model was fed
as decoder input; the target is `labels` shifted left by one with the pad id appended, and target
positions equal to the pad id contribute nothing.

numpy references of the same maths live in the tests (tests/pt/support.py).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F


def shift_targets_left(labels: Tensor, pad_token_id: int) -> Tensor:
    """`labels[:, 1:]` followed by one pad: the token each decoder position must predict."""
    pad = labels.new_full((labels.shape[0], 1), pad_token_id)
    return torch.cat([labels[:, 1:], pad], dim=1)


def marginalize_token_logprobs(seq_logits: Tensor, doc_scores: Tensor, n_docs: int) -> Tensor:
    """RAG-Token marginal: `logsumexp_n(log p(y_t | x, z_n, y_<t) + log p(z_n | x))`, shape `(B, T, V)`."""
    seq_logprobs = F.log_softmax(seq_logits, dim=-1).view(-1, n_docs, seq_logits.shape[1], seq_logits.shape[-1])
    doc_logprobs = F.log_softmax(doc_scores, dim=1)
    return torch.logsumexp(seq_logprobs + doc_logprobs[:, :, None, None], dim=1)


def first_target_is_bos(target: Tensor, bos_token_id: Optional[int]) -> bool:
    """`exclude_bos_score` applies only when every row's first target token is the BOS id."""
    return bos_token_id is not None and bool(target[:, 0].eq(bos_token_id).all())


def combine_nll(ll: Tensor, smooth: Optional[Tensor], epsilon: float, vocab_size: int, reduce_loss: bool = False) -> Tensor:
    """`(1 - eps) * -ll + eps / V * -smooth`, summed over the batch when `reduce_loss`."""
    nll_loss = -ll.sum() if reduce_loss else -ll
    if epsilon == 0.0 or smooth is None:
        # Skip the smoothing term rather than multiply it by 0 (0 * -inf would be NaN).
        return nll_loss
    smooth_loss = -smooth.sum() if reduce_loss else -smooth
    return (1.0 - epsilon) * nll_loss + (epsilon / vocab_size) * smooth_loss


def token_nll(
    seq_logits: Tensor,
    doc_scores: Tensor,
    labels: Tensor,
    *,
    n_docs: int,
    pad_token_id: int,
    reduce_loss: bool = False,
    epsilon: float = 0.0,
    exclude_bos_score: bool = False,
    bos_token_id: Optional[int] = None,
) -> Tensor:
    """RAG-Token loss, `(B,)` or `()` when reduced.

    `ll[b] = sum_t m[b, t, target]`, `smooth[b] = sum_t sum_v m[b, t, v]` with `m` the marginal of
    `marginalize_token_logprobs`; loss `(1 - eps) * -ll + eps / V * -smooth`.
    """
    target = shift_targets_left(labels, pad_token_id)
    keep = target.ne(pad_token_id)
    if epsilon == 0.0:
        # Only the targets' marginals are needed: log p(y_t|z_n) per passage, then logsumexp over passages,
        # without building the (B, T, V) marginal over the whole vocabulary.
        batch, length = target.shape
        token_lp, _ = sequence_token_logprobs(seq_logits, target.repeat_interleave(n_docs, dim=0), with_smooth=False)
        doc_logprobs = F.log_softmax(doc_scores, dim=1)
        token_marginal = torch.logsumexp(token_lp.view(batch, n_docs, length) + doc_logprobs[:, :, None], dim=1)
        marginal = None
    else:
        marginal = marginalize_token_logprobs(seq_logits, doc_scores, n_docs)
        token_marginal = marginal.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    # where(), not a product with the mask: a -inf score times 0 would be NaN
    token_ll = token_marginal.where(keep, 0.0)
    if exclude_bos_score and first_target_is_bos(target, bos_token_id):
        token_ll = token_ll[:, 1:]
    ll = token_ll.sum(1)
    # summed in float32, as in sequence_token_logprobs
    smooth = marginal.sum(-1, dtype=torch.float32).where(keep, 0.0).sum(1) if marginal is not None else None
    return combine_nll(ll, smooth, epsilon, seq_logits.shape[-1], reduce_loss)


def sequence_token_logprobs(seq_logits: Tensor, target_rows: Tensor, with_smooth: bool) -> tuple[Tensor, Optional[Tensor]]:
    """Per-position `log p(target)` and (optionally) `sum_v log p(v)` for `(R, T, V)` logits, targets `(R, T)`."""
    if not with_smooth:
        # logit - logsumexp: no (R, T, V) log-softmax tensor is written (nor kept for backward)
        target_logits = seq_logits.gather(-1, target_rows.unsqueeze(-1)).squeeze(-1)
        return target_logits - torch.logsumexp(seq_logits, dim=-1), None
    logprobs = F.log_softmax(seq_logits, dim=-1)
    token_lp = logprobs.gather(-1, target_rows.unsqueeze(-1)).squeeze(-1)
    # summed in float32: V log-probs of a half-precision model overflow float16 (50k x -10 < -65504)
    return token_lp, logprobs.sum(-1, dtype=torch.float32)


def sequence_marginal(
    token_lp: Tensor,
    smooth_lp: Optional[Tensor],
    doc_logprobs: Tensor,
    keep: Tensor,
    exclude_first: Tensor,
    vocab_size: int,
) -> tuple[Tensor, Optional[Tensor]]:
    """RAG-Sequence marginal from per-position scores.

    `token_lp`, `smooth_lp`: `(Q, N, T)`; `doc_logprobs`: `(Q, N)`; `keep`: `(Q, T)` non-pad targets;
    `exclude_first`: `(Q,)` bool, drop position 0 from the likelihood (BOS). Returns `ll`, `smooth`
    of shape `(Q,)`: `logsumexp_n(sum_t lp + log p(z_n|x))` and
    `logsumexp_n(sum_t sum_v lp + V * log p(z_n|x))`.
    """
    keep = keep[:, None, :]
    score_mask = keep.clone()
    score_mask[:, :, 0] &= ~exclude_first[:, None]
    ll = torch.logsumexp(token_lp.where(score_mask, 0.0).sum(-1) + doc_logprobs, dim=1)
    smooth = None
    if smooth_lp is not None:
        # float32: V * log p(z|x) leaves float16's range for any real vocabulary
        smooth = torch.logsumexp(smooth_lp.float().where(keep, 0.0).sum(-1) + vocab_size * doc_logprobs.float(), dim=1)
    return ll, smooth


def sequence_nll(
    seq_logits: Tensor,
    doc_scores: Tensor,
    labels: Tensor,
    *,
    n_docs: int,
    pad_token_id: int,
    reduce_loss: bool = False,
    epsilon: float = 0.0,
    exclude_bos_score: bool = False,
    bos_token_id: Optional[int] = None,
) -> Tensor:
    """RAG-Sequence loss, `(B,)` or `()` when reduced, with the passage marginal computed explicitly.

    Per passage, `ll[b, n] = sum_t lp[b, n, t, target] + log p(z_n|x)`, then `logsumexp` over passages.
    The original added `log p(z|x)` to the scores of target position 1 instead, which drops it when
    that position is padding (one-token targets, e.g. a lone EOS); here it is added once per passage
    whatever the target length, and no BOS position is assumed (T5 has none).
    """
    target = shift_targets_left(labels, pad_token_id)
    batch = target.shape[0]
    vocab_size = seq_logits.shape[-1]
    target_rows = target.repeat_interleave(n_docs, dim=0)
    token_lp, smooth_lp = sequence_token_logprobs(seq_logits, target_rows, with_smooth=epsilon != 0.0)
    token_lp = token_lp.view(batch, n_docs, -1)
    smooth_lp = smooth_lp.view(batch, n_docs, -1) if smooth_lp is not None else None
    exclude = exclude_bos_score and first_target_is_bos(target, bos_token_id)
    exclude_first = torch.full((batch,), exclude, dtype=torch.bool, device=target.device)
    doc_logprobs = F.log_softmax(doc_scores, dim=1)
    ll, smooth = sequence_marginal(token_lp, smooth_lp, doc_logprobs, target.ne(pad_token_id), exclude_first, vocab_size)
    return combine_nll(ll, smooth, epsilon, vocab_size, reduce_loss)

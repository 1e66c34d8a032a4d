"""`rag_pt.finetune`'s optimizer: AdamW's fused kernel on CPU, the same update as torch's per-parameter loop."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rag_pt.finetune import _adamw


def test_fused_adamw_on_cpu_updates_as_the_per_parameter_loop():
    args = SimpleNamespace(learning_rate=1e-3, adam_epsilon=1e-8, weight_decay=0.01)
    torch.manual_seed(0)
    start = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    results = []
    for make in (lambda ps: _adamw(ps, args),
                 lambda ps: torch.optim.AdamW(ps, lr=1e-3, eps=1e-8, weight_decay=0.01, foreach=False)):
        params = [p.clone().requires_grad_(True) for p in start]
        optimizer = make(params)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.step()
        results.append((optimizer, [p.detach() for p in params]))
    (fused, ours), (_, loop) = results
    assert fused.defaults["fused"] is True
    for a, b in zip(ours, loop):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours[0], start[0])  # the steps moved the weights

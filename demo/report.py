"""The demo's output: the printed table, the target checks and the PNG plot."""

from __future__ import annotations

import os
import textwrap

import numpy as np

LABELS = {"rag_token": "RAG-Token", "rag_sequence": "RAG-Sequence", "baseline": "Generator only (no retrieval)"}

# The targets, checked on every full run.
TARGETS = {
    "rag_token_em": 0.85,  # held-out exact match of RAG-Token, at least
    "baseline_em": 0.10,  # of the generator-only baseline, at most
    "hot_swap": 0.85,  # share of RAG-Token answers that follow the counterfactual index, at least
    "pt_seconds": 600.0,  # full PyTorch run on 2 cores, at most
}


def _pct(x) -> str:
    return "   -  " if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:5.1f}%"


def _sample_lines(samples: list[dict], indent: str = "      ") -> list[str]:
    lines = []
    for s in samples:
        mark = "ok" if s["prediction"] == s["answer"] else "wrong"
        lines.append(f'{indent}Q: {s["question"]}  ->  "{s["prediction"]}"  (expected "{s["answer"]}", {mark})')
        if s.get("top_passage"):
            lines.append(f"{indent}   top passage: {s['top_passage']}")
    return lines


def format_table(results: dict) -> str:
    """The closing table: held-out exact match, recall@k, the hot swap, with provenance samples."""
    sizes = results.get("sizes", {})
    out = []
    title = f"RAG demo ({'PyTorch' if results['framework'] == 'pt' else 'TensorFlow'}"
    title += ", quick slice)" if results.get("quick") else ")"
    out.append("=" * 100)
    out.append(title)
    if sizes:
        out.append(
            f"knowledge base: {sizes['passages']:,} passages (ISO 3166-2 regions); {sizes['train_questions']:,} training "
            f"questions; {sizes['heldout_questions']:,} held-out questions about {sizes['heldout_regions']:,} regions no "
            "training question mentions"
        )
    if results.get("settings", {}).get("augment"):
        out.append(
            "training: every training question is asked twice, in the real world and in a training counterfactual "
            "world (its own index);"
        )
        out.append("the hot swap's counterfactual world is a third one, which training never sees; the baseline learns the real answers only")
    out.append("-" * 100)
    out.append(f"{'held-out exact match':<44}{'all':>8}{'country':>10}{'ISO code':>10}")
    for name, res in results["models"].items():
        kinds = res.get("em_by_kind", {})
        out.append(f"{LABELS.get(name, name):<44}{_pct(res.get('em')):>8}{_pct(kinds.get('country')):>10}{_pct(kinds.get('code')):>10}")
        out += _sample_lines(res.get("samples", []))
    if results.get("recall"):
        out.append("-" * 100)
        out.append("retrieval recall@k (the question's own region passage among the top k), held-out questions")
        for world, rec in results["recall"].items():
            cells = "  ".join(f"@{k}: {_pct(v)}" for k, v in sorted(rec.items(), key=lambda kv: int(kv[0])))
            out.append(f"  {world + ' index':<42}{cells}")
    if results.get("hot_swap"):
        out.append("-" * 100)
        out.append("hot swap: the same trained model, `set_retriever(counterfactual index)`, no retraining")
        out.append(f"{'answers that follow ...':<44}{'new index':>10}{'old world':>11}")
        for name, res in results["hot_swap"].items():
            out.append(f"{LABELS.get(name, name) + ' + counterfactual index':<44}{_pct(res['follow_new']):>10}{_pct(res['follow_old']):>11}")
            out += _sample_lines(res.get("samples", []))
    timings = results.get("timings")
    if timings:
        out.append("-" * 100)
        out.append("time per stage (wall clock; CPU time of this process in brackets)")
        cpu = results.get("cpu_timings", {})
        for stage, seconds in timings.items():
            out.append(f"  {stage:<42}{seconds:8.1f} s   [{cpu.get(stage, float('nan')):7.1f} s]")
        out.append(f"  {'total':<42}{results.get('total_seconds', sum(timings.values())):8.1f} s")
        if any(stage.startswith("  ") for stage in timings):
            out.append("  (indented: each model's training in its own process, inside the stage above it)")
    checks = check_targets(results)
    if checks:
        out.append("-" * 100)
        out.append("targets")
        for line, ok in checks:
            out.append(f"  [{'PASS' if ok else 'MISS'}] {line}")
    out.append("=" * 100)
    return "\n".join(out)


def check_targets(results: dict) -> list[tuple[str, bool]]:
    models, swap = results.get("models", {}), results.get("hot_swap", {})
    checks = []
    if "rag_token" in models:
        em = models["rag_token"]["em"]
        checks.append((f"RAG-Token held-out exact match {_pct(em).strip()} >= {TARGETS['rag_token_em']:.0%}", em >= TARGETS["rag_token_em"]))
    if "baseline" in models:
        em = models["baseline"]["em"]
        checks.append((f"baseline exact match {_pct(em).strip()} <= {TARGETS['baseline_em']:.0%}", em <= TARGETS["baseline_em"]))
    if "rag_token" in swap:
        share = swap["rag_token"]["follow_new"]
        checks.append((f"hot swap: {_pct(share).strip()} of RAG-Token answers follow the new index (>= {TARGETS['hot_swap']:.0%})", share >= TARGETS["hot_swap"]))
    if not results.get("quick") and "total_seconds" in results:
        total = results["total_seconds"]
        # the TF run may take 1.5x the PyTorch budget
        limit = TARGETS["pt_seconds"] * (1.0 if results.get("framework") == "pt" else 1.5)
        checks.append((f"run time {total:.0f} s <= {limit:.0f} s (2 cores)", total <= limit))
    return checks


def write_plot(results: dict, path: str) -> str:
    """Training loss curves (left) and held-out exact match bars (right), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_em) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, res in results["models"].items():
        curve = np.asarray(res.get("loss_curve", []), dtype=float)
        if curve.size == 0:
            continue
        window = max(1, min(25, curve.size // 10))
        smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
        ax_loss.plot(np.arange(smooth.size) + window, smooth, label=LABELS.get(name, name))
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("loss (negative log-likelihood per answer)")
    ax_loss.set_yscale("log")
    ax_loss.set_title("training loss")
    ax_loss.legend()

    bars, values = [], []
    for name, res in results["models"].items():
        bars.append(LABELS.get(name, name).replace(" (no retrieval)", ""))
        values.append(res.get("em", 0.0))
    for name, res in results.get("hot_swap", {}).items():
        bars.append(f"{LABELS.get(name, name)}\nhot swap")
        values.append(res["follow_new"])
    colors = ["tab:blue", "tab:orange", "tab:gray", "tab:cyan", "tab:olive"][: len(bars)]
    ax_em.bar(range(len(bars)), values, color=colors)
    ax_em.set_xticks(range(len(bars)))
    ax_em.set_xticklabels(["\n".join(textwrap.wrap(b, 16)) for b in bars], fontsize=8)
    ax_em.set_ylim(0, 1)
    ax_em.set_ylabel("held-out exact match")
    ax_em.set_title("held-out exact match (hot swap: share following the new index)", fontsize=10)
    for i, v in enumerate(values):
        ax_em.text(i, v + 0.02, f"{100 * v:.0f}%", ha="center", fontsize=9)
    framework = "PyTorch" if results["framework"] == "pt" else "TensorFlow"
    fig.suptitle(f"RAG on ISO 3166-2 regions ({framework}{', quick slice' if results.get('quick') else ''})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

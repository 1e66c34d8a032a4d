"""The demo's output: the printed table, the target checks and the PNG plot."""

from __future__ import annotations

import os
import textwrap

import numpy as np

LABELS = {"rag_token": "RAG-Token", "rag_sequence": "RAG-Sequence", "baseline": "Generator only (no retrieval)"}

# The demo's targets, checked on every full run, on the test questions.
TARGETS = {
    "rag_token_em": 0.85,  # test exact match of RAG-Token, at least
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
    """The closing table: exact match (development and test questions), recall@k, the hot swap, with
    provenance samples. Every number but the development column is the test split's."""
    sizes = results.get("sizes", {})
    out = []
    title = f"RAG demo ({'PyTorch' if results['framework'] == 'pt' else 'TensorFlow'}"
    title += ", quick slice)" if results.get("quick") else ")"
    out.append("=" * 100)
    out.append(title)
    if sizes:
        out.append(
            f"knowledge base: {sizes['passages']:,} passages (ISO 3166-2 regions); {sizes['train_questions']:,} training "
            f"questions; {sizes['dev_questions']:,} development questions about {sizes['dev_regions']:,} regions and "
            f"{sizes['test_questions']:,} test questions about {sizes['test_regions']:,} regions,"
        )
        out.append(
            "none of which a training question mentions; choices are made on the development questions, the test "
            "questions are asked once"
        )
    if results.get("settings", {}).get("augment"):
        out.append(
            "training: every training question is asked twice, in the real world and in a training counterfactual "
            "world (its own index);"
        )
        out.append("the hot swap's counterfactual world is a third one, which training never sees; the baseline learns the real answers only")
    out.append("-" * 100)
    out.append(f"{'exact match':<44}{'dev':>8}{'test':>8}{'country':>10}{'ISO code':>10}   (test)")
    for name, res in results["models"].items():
        kinds = res.get("em_by_kind", {})
        out.append(
            f"{LABELS.get(name, name):<44}{_pct(res.get('dev_em')):>8}{_pct(res.get('em')):>8}"
            f"{_pct(kinds.get('country')):>10}{_pct(kinds.get('code')):>10}"
        )
        out += _sample_lines(res.get("samples", []))
    if results.get("recall"):
        out.append("-" * 100)
        out.append("retrieval recall@k (the question's own region passage among the top k), test questions")
        for world, rec in results["recall"].items():
            cells = "  ".join(f"@{k}: {_pct(v)}" for k, v in sorted(rec.items(), key=lambda kv: int(kv[0])))
            out.append(f"  {world + ' index':<42}{cells}")
    if results.get("hot_swap"):
        out.append("-" * 100)
        out.append("hot swap: the same trained weights with the counterfactual index (`--index_path`), no retraining; test questions")
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
            out.append("  (indented: each model's commands, in its own process, inside the stage above it)")
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
    if models.get("rag_token", {}).get("em") is not None:
        em = models["rag_token"]["em"]
        checks.append((f"RAG-Token test exact match {_pct(em).strip()} >= {TARGETS['rag_token_em']:.0%}", em >= TARGETS["rag_token_em"]))
    if models.get("baseline", {}).get("em") is not None:
        em = models["baseline"]["em"]
        checks.append((f"baseline test exact match {_pct(em).strip()} <= {TARGETS['baseline_em']:.0%}", em <= TARGETS["baseline_em"]))
    if "rag_token" in swap:
        share = swap["rag_token"]["follow_new"]
        checks.append((f"hot swap: {_pct(share).strip()} of RAG-Token answers follow the new index (>= {TARGETS['hot_swap']:.0%})", share >= TARGETS["hot_swap"]))
    if not results.get("quick") and not results.get("settings", {}).get("dev_only") and "total_seconds" in results:
        total = results["total_seconds"]
        # the TF run may take 1.5x the PyTorch budget
        limit = TARGETS["pt_seconds"] * (1.0 if results.get("framework") == "pt" else 1.5)
        checks.append((f"run time {total:.0f} s <= {limit:.0f} s (2 cores)", total <= limit))
    return checks


def write_plot(results: dict, path: str) -> str:
    """Training loss curves (left) and test exact match bars (right), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_em) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, res in results["models"].items():
        curve = np.asarray(res.get("loss_curve", []), dtype=float)
        if curve.size == 0:
            continue
        steps = np.asarray(res.get("loss_steps", np.arange(1, curve.size + 1)), dtype=float)
        window = max(1, min(5, curve.size // 10))
        smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1 :], smooth, label=LABELS.get(name, name))
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("loss (negative log-likelihood per answer)")
    ax_loss.set_yscale("log")
    ax_loss.set_title("training loss")
    ax_loss.legend()

    bars, values = [], []
    for name, res in results["models"].items():
        bars.append(LABELS.get(name, name).replace(" (no retrieval)", ""))
        values.append(res.get("em", res.get("dev_em", 0.0)))
    for name, res in results.get("hot_swap", {}).items():
        bars.append(f"{LABELS.get(name, name)}\nhot swap")
        values.append(res["follow_new"])
    colors = ["tab:blue", "tab:orange", "tab:gray", "tab:cyan", "tab:olive"][: len(bars)]
    ax_em.bar(range(len(bars)), values, color=colors)
    ax_em.set_xticks(range(len(bars)))
    ax_em.set_xticklabels(["\n".join(textwrap.wrap(b, 16)) for b in bars], fontsize=8)
    ax_em.set_ylim(0, 1)
    ax_em.set_ylabel("test exact match")
    ax_em.set_title("test exact match (hot swap: share following the new index)", fontsize=10)
    for i, v in enumerate(values):
        ax_em.text(i, v + 0.02, f"{100 * v:.0f}%", ha="center", fontsize=9)
    framework = "PyTorch" if results["framework"] == "pt" else "TensorFlow"
    fig.suptitle(f"RAG on ISO 3166-2 regions ({framework}{', quick slice' if results.get('quick') else ''})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

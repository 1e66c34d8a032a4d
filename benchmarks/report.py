"""RESULTS.md from a results dict (`results.json`'s content): the targets, one section per suite job.

`write_markdown(results)` is pure (no I/O), so that the layout is tested on a fake result
(tests/core/test_benchmarks_smoke.py) without running a benchmark.
"""

from __future__ import annotations

import math
from typing import Optional

from . import common

TITLES = {  # by job label
    "retriever": "Retriever: `RagRetriever.__call__`",
    "retriever index kinds": "Retriever: index kinds (build, queries/s, recall, faiss index size)",
    "pt": "PyTorch models",
    "pt base-size": "PyTorch models, base size (d_model 768, 6+6 layers)",
    "tf": "TensorFlow models",
    "tf base-size": "TensorFlow models, base size (d_model 768, 6+6 layers)",
    "memory": "Memory: peak RSS of a process that loads an index of each kind and serves queries",
    "imports": "Import hygiene: what each package imports, import time and peak RSS, in both environments",
    "tf 2026-11-28": "TensorFlow models: the previous complete run (2026-11-28), with the rows not re-run",
}
VERSION_KEYS = ("transformers", "torch", "tensorflow", "tensorflow-cpu", "keras", "tf-keras", "tokenizers", "numpy", "faiss-cpu",
                "datasets", "python", "rag-twin")
# Every benchmark target, as (job label, case-name prefix, target): the Targets table lists each
# one, measured or not, so that a case that did not run shows as "not measured", not as nothing.
EXPECTED_TARGETS = [
    ("retriever", "retriever __call__", 5.0),
    ("pt", "train step RAG-Token", 1.5),
    ("pt", "train step RAG-Sequence", 1.5),
    ("pt", "RAG-Token generate greedy", 2.0),
    ("pt", "RAG-Token generate beam 4", 2.0),
    ("pt", "RAG-Sequence generate beam 4", 4.0),
    ("tf", "call RAG-Token", 1.5),
    ("tf", "RAG-Token generate greedy", 5.0),
    ("tf", "RAG-Sequence generate", 10.0),
]
EXPECTED_TARGETS_CUDA = [("pt cuda", "RAG-Token generate greedy", 2.0)]  # tokens/s on the same card


def fmt_seconds(s: Optional[float]) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "—"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_rate(per_s: Optional[float], unit: Optional[str]) -> str:
    if not per_s:
        return ""
    unit = {"tokens": "tok", "passages": "passages", "queries": "q"}.get(unit or "", unit or "items")
    return f" ({per_s:,.0f} {unit}/s)" if per_s >= 10 else f" ({per_s:.2f} {unit}/s)"


def fmt_ratio(r: Optional[float]) -> str:
    return "—" if r is None else f"{r:.2f}x"


def fmt_verdict(row: dict) -> str:
    if row.get("error"):
        return "not run"
    if row.get("target") is None:
        return ""
    if row.get("met") is None:
        return "not measured"
    return "met" if row["met"] else "**missed**"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def case_table(cases: list[dict], with_suite: bool = False) -> list[str]:
    head = ("| suite " if with_suite else "") + "| case | ours | original | ratio | target | result |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in cases:
        target = f">= {row['target']:g}x" if row.get("target") is not None else ""
        ours = fmt_seconds(row.get("ours_s")) + fmt_rate(row.get("ours_per_s"), row.get("items_unit"))
        orig = fmt_seconds(row.get("original_s")) + fmt_rate(row.get("original_per_s"), row.get("items_unit"))
        name = row["name"] + (f" — {row['error']}" if row.get("error") else "") + (
            f" ({row['note']})" if row.get("note") else "")
        cells = ([row.get("_suite", "")] if with_suite else []) + [
            name, ours, orig, fmt_ratio(row.get("ratio")), target, fmt_verdict(row)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def memory_table(rows: list[dict]) -> list[str]:
    mib = lambda v: "—" if v is None else f"{v:,.0f} MiB"  # noqa: E731
    lines = [
        "| index kind | peak RSS | RSS before loading | index memory (peak − before) | of which anonymous "
        "/ file-backed | vs flat (peak / anonymous) | target | result | files on disk | build | queries/s served | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = r.get("vs_flat")
        verdict = "" if r.get("met") is None else ("met" if r["met"] else "**missed**")
        lines.append("| " + " | ".join(_cell(c) for c in [
            r.get("kind", "?"), mib(r.get("peak_rss_mib")), mib(r.get("baseline_rss_mib")),
            mib(r.get("index_rss_mib")),
            "—" if r.get("index_anon_mib") is None else f"{mib(r['index_anon_mib'])} / {mib(r.get('index_file_mib'))}",
            "—" if vs is None else f"{vs:.3f}" + ("" if r.get("anon_vs_flat") is None else f" / {r['anon_vs_flat']:.3f}"),
            r.get("target", ""), verdict,
            mib(r.get("disk_mib")), fmt_seconds(r.get("build_s")),
            "—" if not r.get("queries_per_s") else f"{r['queries_per_s']:,.0f}",
            r.get("error") or r.get("note") or "",
        ]) + " |")
    return lines


def generic_table(table: dict) -> list[str]:
    """A suite's extra table: `{"title", "columns": [...], "rows": [[...], ...]}`."""
    lines = [f"**{table['title']}**", ""] if table.get("title") else []
    cols = table["columns"]
    lines += ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in table.get("rows", []):
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def _measured_when(suite: dict) -> str:
    m = suite.get("measured") or {}
    return f"{m.get('created') or 'date unknown'}, commit {m.get('commit') or 'unknown'}"


def section_provenance(suite: dict) -> list[str]:
    """Where a section's numbers come from: not re-run (with its date and commit), its environment's versions."""
    lines = []
    m = suite.get("measured") or {}
    if suite.get("not_rerun"):
        lines.append(f"**Not re-run**: kept from an earlier run ({_measured_when(suite)}"
                     + (f"; `{m['command']}`" if m.get("command") else "") + ").")
    elif m:
        lines.append(f"Measured {_measured_when(suite)}" + (f" (`{m['command']}`)" if m.get("command") else "")
                     + (f"; load average (1 min) at the end {m['load_average'][0]}" if m.get("load_average") else "")
                     + ".")
    v = suite.get("versions") or {}
    if v:
        env = suite.get("environment")
        both = "; ours and the original in one process" if suite.get("suite") in ("pt", "tf", "retriever") else ""
        where = "; ".join(x for x in (f"environment {env}" if env else "", both.lstrip("; ")) if x)
        lines.append(f"Versions{' (' + where + ')' if where else ''}: "
                     + ", ".join(f"{k} {v[k]}" for k in VERSION_KEYS if k in v) + ".")
    return lines + ([""] if lines else [])


def target_rows(suites: list[dict], cuda: bool = False) -> list[dict]:
    """Every row with a target, plus a "not measured" row for each expected target no case answered."""
    rows = []
    for s in suites:
        label = s.get("label", s["suite"])
        shown = f"{label} (not re-run: {_measured_when(s)})" if s.get("not_rerun") else label
        for row in s.get("cases", []):
            if row.get("target") is not None:
                rows.append(dict(row, _suite=shown, _job=label))
    def same_job(job_label: str, label: str) -> bool:  # "pt" is not "pt base-size"; "pt cuda" is every precision
        return job_label.startswith(label) if cuda else job_label == label

    for label, prefix, target in (EXPECTED_TARGETS_CUDA if cuda else EXPECTED_TARGETS):
        jobs = [s for s in suites if same_job(s.get("label", s["suite"]), label)]
        if not jobs or any(same_job(r.get("_job", r["_suite"]), label) and r["name"].lower().startswith(prefix.lower())
                           for r in rows):
            continue  # the suite was not asked for (--only), or a case answered the target
        why = "; ".join(f"{s.get('label')}: {s.get('status')}" for s in jobs if s.get("status") != "ok") or \
            "no case of this name in the suite"
        rows.append(dict(common.case(prefix, None, None, target=target, _partial=False), _suite=label,
                         error=f"not measured ({why})"))
    return rows


def write_markdown(results: dict) -> str:
    """RESULTS.md from a results dict (`results.json`'s content)."""
    m, v = results.get("machine", {}), results.get("versions", {})
    threads = results.get("threads_used", {})
    out = [f"# Benchmark results ({results.get('device', 'cpu')})", ""]
    kind = "quick run (`--quick`): indicative only" if results.get("quick") else "full run"
    if results.get("assembled"):
        out.append(f"Assembled by `{results.get('command', 'python -m benchmarks.run_all')}` on "
                   f"{results.get('created', '?')} from separate runs of the suites ({results.get('wall_s', 0) / 60:.1f} "
                   "min of suite processes re-run for it): each section states its date, commit, command, environment "
                   "and the machine's load, and sections kept from an earlier run are marked **Not re-run**.")
    else:
        out.append(f"Generated by `{results.get('command', 'python -m benchmarks.run_all')}` on "
                   f"{results.get('created', '?')}, {kind}, {results.get('wall_s', 0) / 60:.1f} min in all.")
    out.append("")
    out.append(f"- Machine: {m.get('cpu', '?')}, {m.get('usable_cpus', '?')} usable of {m.get('logical_cpus', '?')} "
               f"logical CPUs, {m.get('memory_gib', '?')} GiB RAM; {m.get('platform', '')}")
    if results.get("cuda_device"):
        out.append(f"- GPU: {results['cuda_device']}")
    load = results.get("load_average", {})
    if load:
        out.append(f"- Load average (1 min) at start {load.get('start', ['?'])[0]}, at end {load.get('end', ['?'])[0]} "
                   "(other processes on the machine slow both sides alike; ratios are what to compare)")
    requested = results.get("threads_requested")
    used = ", ".join(f"{k.replace('_threads', '')} {val}" for k, val in threads.items())
    out.append("- Threads: " + (f"{requested} requested (--threads)" if requested else "library defaults")
               + (f"; first seen: {used} (per suite: see each section)" if used else ""))
    out.append("- Versions of the main environment (.venv): " + ", ".join(f"{k} {val}" for k, val in v.items())
               + ". Each section states the versions of the environment it ran in (the TF suite runs in "
               ".venv-oracle: transformers 4.x, whose TF RAG classes are the original there).")
    if results.get("commit"):
        out.append(f"- Commit of this report: {results['commit']}; each section states when and at which commit "
                   "it was measured, and sections kept from an earlier run say so.")
    t = results.get("timing", {})
    out.append(f"- Timing: {t.get('warmup', common.WARMUP)} warm-up call(s), then the median of up to "
               f"{t.get('repeats', '?')} calls (fewer, at least {common.MIN_REPEATS}, for cases longer than the "
               "suite's time budget); ours and the original alternate, in one process, on the same weights, "
               "index and inputs. Ratio = original time / our time (> 1: ours faster); throughput in brackets.")
    for note in results.get("notes", []):
        out.append(f"- {note}")
    out.append("")

    suites = results.get("suites", [])
    targeted = target_rows(suites, cuda=results.get("device", "cpu") != "cpu")
    if targeted:
        met = sum(1 for r in targeted if r.get("met"))
        out += ["## Targets", "", f"{met} of {len(targeted)} targets met "
                f"({sum(1 for r in targeted if r.get('met') is False)} missed, "
                f"{sum(1 for r in targeted if r.get('met') is None)} not measured).", ""]
        out += case_table(targeted, with_suite=True) + [""]

    for s in suites:
        label = s.get("label", s["suite"])
        out += [f"## {TITLES.get(label, label)}", ""]
        out += section_provenance(s)
        if s.get("markdown"):  # a section kept as it was written (no results.json record of it exists)
            out += [s["markdown"].rstrip(), ""]
            continue
        if s.get("status") != "ok":
            out += [f"Not run to the end: {s.get('status')}: {s.get('error', '')}", ""]
            if s.get("memory"):
                out += memory_table(s["memory"]) + [""]
            if s.get("cases"):
                out += case_table(s["cases"]) + [""]
            continue
        config = s.get("config") or {}
        if config:
            out += ["Sizes: " + ", ".join(f"{k} {val}" for k, val in config.items()), ""]
        if s.get("memory"):
            out += memory_table(s["memory"]) + [""]
        if s.get("cases"):
            out += case_table(s["cases"]) + [""]
        for table in s.get("tables", []):
            out += generic_table(table) + [""]
        for note in s.get("notes", []):
            out.append(f"- {note}")
        if s.get("notes"):
            out.append("")
        limits = s.get("limits") or {}
        capped = ""
        if limits.get("max_repeats"):
            capped = f" Repeats capped at {limits['max_repeats']}" + (
                f", {limits['max_budget_s']:.0f} s of timed calls per case" if limits.get("max_budget_s") else "") + "."
        runtime = {k: v for k, v in (s.get("runtime") or {}).items() if k != "env"}
        threads = "; threads: " + ", ".join(f"{k.replace('_threads', '')} {v}" for k, v in runtime.items()) if runtime else ""
        out += [f"_{s.get('process_wall_s', s.get('wall_s', 0)):.0f} s{threads}.{capped}_", ""]

    if results.get("cross"):
        out += ["## Ours: TensorFlow versus PyTorch", "",
                "Same sizes and passages, different random weights; each framework in its own process and run, "
                "so at the load each section states: indicative only. Ratio = our PyTorch time / our TF time "
                "(> 1: our TF is faster).", ""]
        out += case_table(results["cross"]) + [""]

    missing = [s for s in suites if s.get("status") != "ok" and not s.get("markdown")]
    dropped = [s for s in suites if s.get("dropped_kwargs")]
    if missing or dropped or results.get("missing"):
        out += ["## Missing", ""]
        for s in missing:
            kept = f" (not re-run: {_measured_when(s)})" if s.get("not_rerun") else ""
            out.append(f"- {s.get('label', s['suite'])}{kept}: {s.get('status')} — {s.get('error', '')}")
        for s in dropped:
            out.append(f"- {s.get('label', s['suite'])}: run() ignored {', '.join(s['dropped_kwargs'])}")
        for line in results.get("missing", []):
            out.append(f"- {line}")
        out.append("")
    return "\n".join(out)

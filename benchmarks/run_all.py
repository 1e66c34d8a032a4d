"""Run every benchmark suite and write one JSON file and one markdown table.

    python -m benchmarks.run_all                      # full CPU run: benchmarks/results.json + RESULTS.md
    python -m benchmarks.run_all --quick              # small models only, fewer repeats; writes under benchmarks/_work/
    python -m benchmarks.run_all --only retriever,memory
    python -m benchmarks.run_all --only ray --ray-passages 200000
                                                      # the Ray serving benchmark on a smaller index
                                                      # (default 1,000,000 x 768: ~19 GB of cached index
                                                      # folders under benchmarks/_work/indexes/); --skip ray
    python -m benchmarks.run_all --device cuda        # PyTorch cases on a GPU, float32 and bfloat16:
                                                      # benchmarks/results_cuda.json + RESULTS_cuda.md
    python -m benchmarks.run_all --only pt,retriever --keep-from benchmarks/results.json
                                                      # re-run two suites; every other section is kept from
                                                      # the given file, marked "not re-run" with its date and commit

(`make bench BENCH_ARGS="--quick"` passes the same flags.)

Each suite runs in a fresh subprocess (`bench_<suite>.run(**kwargs)`): torch and tensorflow never
share a process, a crash or a timeout of one suite still leaves the others' rows, and every suite
starts with a cold allocator. Inside a suite, ours and the original are timed side by side in
one process (`benchmarks.common.compare`). Only a full run (no `--quick`, no `--only`) or a run that
merges other results (`--keep-from` / `--add-from`) writes the committed files; other runs write under
`benchmarks/_work/` unless `--out-dir` says otherwise. Every suite records the versions of its own
environment and the date and commit it was measured at (`measured`).

`--keep-from FILE` takes the suites this run does not run from an earlier results.json, marked as not
re-run (RESULTS.md says so, with their date and commit); `--add-from FILE` takes them as part of this
run (e.g. a suite run separately with `--out-dir` shortly before). `--suite-kwargs '{"tf": {...}}'`
passes keywords to one suite's `run()` (e.g. the TF suite's `cases`).

The `pt` suite compares with the PyTorch RAG classes of the transformers in this environment (5.x in
`.venv`). The `imports` suite starts fresh interpreters of this environment and of the oracle one and
reports what `rag_core`, `rag_pt` and `rag_tf` import. The `tf` suite compares with transformers'
TensorFlow RAG classes, which exist only in transformers 4.x: it runs with the oracle environment's interpreter, `.venv-oracle/bin/python` under the repository
root (`make oracle-setup`), or the one `RAG_ORACLE_PYTHON` names; without it the suite is skipped
with a message saying so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

from . import common
from .report import fmt_seconds, write_markdown

HERE = os.path.dirname(os.path.abspath(__file__))
WORK_DIR = common.WORK_DIR

SUITES = {
    "retriever": "benchmarks.bench_retriever",
    "pt": "benchmarks.bench_pt",
    "tf": "benchmarks.bench_tf",
    "memory": "benchmarks.bench_memory",
    "imports": "benchmarks.bench_imports",
    "ray": "benchmarks.bench_ray_index",
}
# The issue's sizes: batch 8, n_docs 5, 20,000 passages, BART d_model 256 with 2+2
# layers, 20 generated tokens; plus one "base-size" BART (d_model 768, 6+6 layers).
BASE = {"d_model": 768, "layers": 6}
BASE_REPEATS, BASE_BUDGET_S = 2, 30.0

# Suites that need the oracle environment (transformers 4.x with its TF RAG classes, tf-keras):
# run with its interpreter, not this one.
ORACLE_SUITES = {"tf"}
ORACLE_PYTHON_ENV = "RAG_ORACLE_PYTHON"


def oracle_python() -> tuple[Optional[str], str]:
    """(interpreter, "") for the oracle environment, or (None, why not)."""
    given = os.environ.get(ORACLE_PYTHON_ENV)
    path = given or os.path.join(os.path.dirname(HERE), ".venv-oracle", "bin", "python")
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path, ""
    where = f"{ORACLE_PYTHON_ENV}={given}" if given else f"{os.path.relpath(path)} (or {ORACLE_PYTHON_ENV})"
    return None, (f"the TensorFlow suite needs the oracle environment (transformers 4.x with its TF "
                  f"RAG classes and tf-keras), and {where} is not an executable python. Create it with "
                  f"`make oracle-setup`, or point {ORACLE_PYTHON_ENV} at such an interpreter.")


# === Jobs ===
# Order = priority: the issue-7 targets first, the extra information last, so that when the time
# budget runs out (`--budget-min`) it is the least important job that is cut short. A job may run
# until only the reserve of the jobs after it is left (RESERVE x their weight's share of the budget).
JOB_ORDER = ["retriever", "pt", "tf", "imports", "memory", "pt base-size", "tf base-size", "ray",
             "retriever index kinds"]
WEIGHTS = {"retriever": 0.06, "pt": 0.14, "tf": 0.22, "imports": 0.04, "memory": 0.10, "pt base-size": 0.14,
           "tf base-size": 0.18, "ray": 0.30, "retriever index kinds": 0.16}


def plan_jobs(only: list[str], device: str, precisions: list[str], quick: bool, base_size: bool,
              max_repeats: Optional[int] = None, suite_kwargs: Optional[dict] = None) -> list[dict]:
    """The subprocess runs, in priority order (see JOB_ORDER), each with its share of the time budget.

    `suite_kwargs`: {suite: {keyword: value}} added to that suite's `run()` keywords (every size)."""
    jobs = []
    if device != "cpu":  # only the PyTorch cases have a device mode; faiss stays on the CPU
        if "pt" in only:
            for precision in precisions:
                jobs.append({"suite": "pt", "label": f"pt {device} {precision}", "size": "small", "weight": 1.0,
                             "kwargs": {"quick": quick, "device": device, "precision": precision}})
    else:
        by_label = {}
        for suite in only:
            if suite == "retriever":
                # Two processes: the __call__ comparison survives a cut of the long
                # 200,000-vector index-kind builds (information only).
                by_label["retriever"] = {"suite": suite, "size": None, "kwargs": {"quick": quick, "part": "call"}}
                by_label["retriever index kinds"] = {"suite": suite, "size": None,
                                                     "kwargs": {"quick": quick, "part": "kinds"}}
                continue
            by_label[suite] = {"suite": suite, "size": "small" if suite in ("pt", "tf") else None,
                               "kwargs": {"quick": quick}}
            if suite in ("pt", "tf") and base_size:
                # Calls about ten times longer than the small model's: a median of at most BASE_REPEATS
                # after the warm-up, so that `make bench` keeps to its 20 minutes.
                by_label[f"{suite} base-size"] = {
                    "suite": suite, "size": "base", "kwargs": {"quick": quick, "size": "base", **BASE},
                    "limits": {"max_repeats": BASE_REPEATS, "max_budget_s": BASE_BUDGET_S}}
        for label in JOB_ORDER:
            if label in by_label:
                jobs.append(dict(by_label[label], label=label, weight=WEIGHTS[label]))
    for job in jobs:
        job["kwargs"] = {**job["kwargs"], **(suite_kwargs or {}).get(job["suite"], {})}
    if max_repeats:
        for job in jobs:
            limits = job.setdefault("limits", {})
            limits["max_repeats"] = min(max_repeats, limits.get("max_repeats", max_repeats))
    return jobs


RESERVE = 0.5  # a job may overrun its share, but leaves each later job at least this part of its own


def job_timeout(jobs: list[dict], index: int, remaining_s: Optional[float], budget_s: Optional[float],
                hard_max_s: float) -> float:
    """Seconds job `index` may run: the budget left minus a reserve for each later (less important) job."""
    if remaining_s is None or not budget_s:
        return hard_max_s
    total = sum(job.get("weight", 1.0) for job in jobs)
    reserve = sum(RESERVE * budget_s * job.get("weight", 1.0) / total for job in jobs[index + 1:])
    return max(0.0, min(hard_max_s, remaining_s - reserve))


def _json_default(value):
    if isinstance(value, common.Measurement):
        return value.to_dict()
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# === Normalising what suites return ===
_OURS_KEYS = ("ours_s", "ours", "ours_median_s", "ours_time_s", "ours_sec")
_ORIG_KEYS = ("original_s", "original", "original_median_s", "oracle_s", "oracle", "reference_s", "reference")
_TARGET_KEYS = ("target", "target_ratio", "target_speedup")


def _pick(row: dict, keys) -> Optional[float]:
    for key in keys:
        if key in row and row[key] is not None:
            value = row[key]
            if isinstance(value, dict):
                value = value.get("median_s", value.get("median"))
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def normalize_case(name: Optional[str], row: dict) -> dict:
    """A suite's row in `common.case` form, whatever aliases it used (`oracle_s`, `speedup`, ...)."""
    if "ours_s" in row and "original_s" in row and "ratio" in row and "met" in row:
        out = dict(row)
    else:
        ours, original, target = _pick(row, _OURS_KEYS), _pick(row, _ORIG_KEYS), _pick(row, _TARGET_KEYS)
        known = set(_OURS_KEYS) | set(_ORIG_KEYS) | set(_TARGET_KEYS) | {"name", "items", "items_unit", "note", "ratio", "speedup", "met", "error"}
        extra = {k: v for k, v in row.items() if k not in known}
        out = common.case(row.get("name", name or "?"), ours, original, target=target,
                          items=row.get("items"), items_unit=row.get("items_unit"), note=row.get("note"), **extra)
        if out["ratio"] is None:
            given = _pick(row, ("ratio", "speedup"))
            if given is not None:
                out["ratio"] = given
                out["met"] = given >= target if target is not None else None
        if row.get("error"):
            out["error"] = row["error"]
    if not out.get("name"):
        out["name"] = name or "?"
    return out


def normalize_result(suite: str, result) -> dict:
    if not isinstance(result, dict):
        return {"suite": suite, "cases": [], "error": f"run() returned {type(result).__name__}, expected a dict"}
    result = dict(result)
    cases = result.get("cases")
    if cases is None:  # a plain {case name: row} mapping
        cases = {k: v for k, v in result.items() if isinstance(v, dict) and any(key in v for key in _OURS_KEYS)}
        for key in cases:
            result.pop(key)
    if isinstance(cases, dict):
        cases = [normalize_case(name, row) for name, row in cases.items()]
    else:
        cases = [normalize_case(None, row) for row in cases if isinstance(row, dict)]
    result["cases"] = cases
    result.setdefault("suite", suite)
    return result


# === Adapters: suites that return their own dict shape ===
def adapt_retriever(result: dict) -> dict:
    """bench_retriever's `{"call": {...}, "kinds": {...}}` as cases and a table."""
    if "cases" in result:
        return result
    cases, tables, config = [], [], {}
    call = result.get("call")
    if call:
        config.update({k: call[k] for k in ("passages", "dim", "batch", "n_docs", "index_kind") if k in call})
        pct = lambda v: "—" if v is None else f"{v:.0%}"  # noqa: E731
        if "ours_tokenizing_cold_s" in call and "build_tokenizing_s" in call:
            cases.append(common.case(
                "retriever __call__, like for like: ours tokenizes the retrieved passages at call time (the "
                "original's index folder, no stored ids), cold (passages not seen before)",
                call["ours_tokenizing_cold_s"], call.get("theirs_s"), target=5.0,
                note=(f"ours padded its contexts to {call['ours_padded_mean']:.0f} tokens on average (longest in "
                      f"batch), the original to max_combined_length 300; " if call.get("ours_padded_mean") else "")
                + f"ours' passage-token cache hits {pct(call.get('hit_rate_tokenizing_cold'))}; excluding the "
                     f"faiss search both make ({fmt_seconds(call.get('faiss_search_s'))}): "
                     f"{call.get('ratio_tokenizing_cold_excluding_search', 0):.2f}x"))
            cases.append(common.case(
                "retriever __call__, ours reading passages pre-tokenized at build time (untimed there), cold",
                call.get("ours_cold_s"), call.get("theirs_s"),
                note=f"information, not like for like: build_index(generator_tokenizer=...) spent "
                     f"{call['build_tokenizing_s']:.1f} s tokenizing the {call.get('passages', 0):,} passages; "
                     f"cache hits {pct(call.get('hit_rate_cold'))}"))
            cases.append(common.case(
                "retriever __call__, pre-tokenized, with the build-time tokenizing amortized (its cost per passage "
                "x the passages of one call)",
                call.get("ours_amortized_cold_s"), call.get("theirs_s"),
                note=f"information: + {fmt_seconds(call.get('build_tokenizing_per_call_s'))} per call of "
                     f"{call.get('batch', 0) * call.get('n_docs', 0)} passages"))
            cases.append(common.case(
                "retriever __call__, pre-tokenized, warm (repeated passages: ours' token cache hits)",
                call.get("ours_warm_s"), call.get("theirs_s"),
                note=f"information; cache hits {pct(call.get('hit_rate_warm'))}"))
        else:  # results of the suite before the like-for-like rows
            cases.append(common.case("retriever __call__, cold (passages not seen before)", call.get("ours_cold_s"),
                                     call.get("theirs_s"), target=5.0))
            cases.append(common.case("retriever __call__, warm (repeated passages: our token cache hits)",
                                     call.get("ours_warm_s"), call.get("theirs_s"),
                                     note="information: the target is judged on the cold case"))
    kinds = (result.get("kinds") or {}).get("kinds")
    if kinds:
        k = result["kinds"]
        rows = []
        for kind, r in kinds.items():
            recall = next((v for key, v in r.items() if key.startswith("recall")), None)
            rows.append([kind, fmt_seconds(r.get("build_s")), f"{r.get('queries_per_s', 0):,.0f}",
                         f"{r.get('speed_vs_flat', 0):.2f}x", "—" if recall is None else f"{recall:.3f}",
                         f"{r.get('memory_bytes', 0) / 2**20:,.1f} MiB", f"{r.get('memory_vs_flat', 0):.3f}",
                         ", ".join(f"{a} {b}" for a, b in (r.get("search") or {}).items())])
            if kind in ("hnsw_sq8", "ivfpq") and recall is not None and "memory_vs_flat" in r:
                # target: a compressed kind with recall@5 >= 0.95 at <= 1/8 of flat's memory and >= 10x its queries/s
                ok = recall >= 0.95 and r["memory_vs_flat"] <= 1 / 8 and r.get("speed_vs_flat", 0) >= 10
                rows[-1].append("met" if ok else "**missed**")
            else:
                rows[-1].append("")
        tables.append({
            "title": f"Index kinds: {k.get('vectors', '?'):,} x {k.get('dim', '?')}-dim clustered vectors, "
                     f"{k.get('queries', '?')} queries in batches of {k.get('batch', '?')}",
            "columns": ["kind", "build", "queries/s", "vs flat", "recall@5 vs flat", "faiss index size",
                        "size vs flat", "search settings",
                        "target: recall >= 0.95, <= 1/8 memory, >= 10x queries/s"],
            "rows": rows,
        })
        config["index-kind vectors"] = k.get("vectors")
    return {"suite": "retriever", "cases": cases, "tables": tables, "config": config, "raw": result}


ADAPTERS = {"retriever": adapt_retriever}


# === Child process: run one suite ===
def run_child(suite: str, kwargs: dict, out_path: str, threads: Optional[int]) -> int:
    common.set_threads(threads)
    started = time.perf_counter()
    record: dict = {"suite": suite, "requested_kwargs": kwargs}
    try:
        module = importlib.import_module(SUITES[suite])
    except ModuleNotFoundError as err:
        if err.name == SUITES[suite]:
            record.update(status="missing", error=f"benchmarks/bench_{suite}.py does not exist yet")
        else:
            record.update(status="error", error=f"importing {SUITES[suite]} failed: {err}")
        return _write_child(out_path, record, started)
    run = getattr(module, "run", None)
    if not callable(run):
        record.update(status="missing", error=f"{SUITES[suite]} has no run() function")
        return _write_child(out_path, record, started)
    params = inspect.signature(run).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {k: v for k, v in kwargs.items() if takes_any or k in params}
    record["dropped_kwargs"] = sorted(set(kwargs) - set(accepted))
    if "device" in kwargs and "device" not in accepted:
        record.update(status="unsupported", error=f"{SUITES[suite]}.run() takes no `device` argument: no {kwargs['device']} mode")
        return _write_child(out_path, record, started)
    if kwargs.get("size") == "base" and not ({"size", "d_model"} & set(accepted)):
        record.update(status="unsupported",
                      error=f"{SUITES[suite]}.run() takes no `size` / `d_model` argument: no base-size case")
        return _write_child(out_path, record, started)
    try:
        raw = run(**accepted)
        if suite in ADAPTERS and isinstance(raw, dict):
            raw = ADAPTERS[suite](raw)
        result = normalize_result(suite, raw)
        record.update(result)
        record["status"] = "error" if result.get("error") else "ok"
    except Exception as err:  # the report shows it; the other suites still run
        import traceback

        traceback.print_exc()
        record.update(status="error", error=f"{type(err).__name__}: {err}")
    record.setdefault("runtime", common.runtime_info())
    return _write_child(out_path, record, started)


def _env_name(python: str) -> str:
    """`.venv` / `.venv-oracle` (the repository's environments) or the interpreter's path."""
    root = os.path.dirname(HERE)
    rel = os.path.relpath(python, root)
    return rel.split(os.sep)[0] if not rel.startswith("..") else python


def _write_child(out_path: str, record: dict, started: float) -> int:
    record["wall_s"] = time.perf_counter() - started
    record["versions"] = common.versions()  # this suite's environment (the TF suite runs in the oracle one)
    record["environment"] = _env_name(sys.executable)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(record, f, default=_json_default, indent=1)
    return 0


def spawn(job: dict, threads: Optional[int], timeout_s: float) -> dict:
    """Run one job in a fresh interpreter; its output streams to the terminal, its result comes back as JSON."""
    python = sys.executable
    if job["suite"] in ORACLE_SUITES:
        python, why = oracle_python()
        if python is None:
            print(f"\n=== {job['label']}: {why} ===", flush=True)
            return {"suite": job["suite"], "label": job["label"], "size": job["size"], "cases": [],
                    "status": "skipped", "error": why, "process_wall_s": 0.0, "limits": job.get("limits", {})}
    fd, out_path = tempfile.mkstemp(prefix=f"bench_{job['suite']}_", suffix=".json")
    os.close(fd)
    cmd = [python, "-m", "benchmarks.run_all", "--child", job["suite"], "--child-out", out_path,
           "--child-kwargs", json.dumps(job["kwargs"])]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    partial_path = out_path + ".partial"
    env[common.PARTIAL_ENV] = partial_path
    limits = job.get("limits", {})
    if limits.get("max_repeats"):
        env[common.MAX_REPEATS_ENV] = str(limits["max_repeats"])
    if limits.get("max_budget_s"):
        env[common.MAX_BUDGET_ENV] = str(limits["max_budget_s"])
    started = time.perf_counter()
    print(f"\n=== {job['label']}" + ("" if python == sys.executable else f" (with {python})") + " ===", flush=True)
    proc = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the suite and anything it started
        proc.wait()
        rc = None
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    wall = time.perf_counter() - started
    record: dict = {}
    try:
        with open(out_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        pass
    finally:
        os.unlink(out_path)
    partial: dict = {}
    if os.path.exists(partial_path):
        with open(partial_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    item = json.loads(line)
                    partial.setdefault(item["table"], []).append(item["row"])
        os.unlink(partial_path)
    if rc is None or not record:
        n_done = sum(len(rows) for rows in partial.values())
        done = f"; the {n_done} row(s) it finished are kept" if n_done else ""
        why = f"stopped after {timeout_s:.0f} s (its time: --budget-min / --timeout)" if rc is None else f"its process exited with code {rc}"
        record = {"suite": job["suite"], "status": "timeout" if rc is None else "error", "error": why + done,
                  "cases": partial.pop("cases", []), **partial}
    record.setdefault("cases", [])
    record.update(label=job["label"], size=job["size"], process_wall_s=wall, limits=job.get("limits", {}))
    record["measured"] = {"created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                          "commit": common.git_commit(), "command": _command(),
                          "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    print(f"=== {job['label']}: {record.get('status')} in {wall:.0f} s ===", flush=True)
    return record


def _command() -> str:
    return "python -m benchmarks.run_all" + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:]))


# === Merging earlier results ===
def load_previous(path: str, kept: bool) -> list[dict]:
    """The suites of an earlier results.json, each with `measured` (its date, commit, command) and, when
    `kept`, `not_rerun` set: RESULTS.md marks those sections as not re-run."""
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    suites = []
    for suite in previous.get("suites", []):
        suite = dict(suite)
        suite.setdefault("measured", {"created": previous.get("created"), "commit": previous.get("commit"),
                                      "command": previous.get("command")})
        suite.setdefault("versions", previous.get("versions"))
        if kept:
            suite["not_rerun"] = True
        suites.append(suite)
    return suites


def merge_suites(fresh: list[dict], sources: list[list[dict]]) -> list[dict]:
    """This run's suites, then the suites of `sources` (first source first) whose label this run lacks,
    in JOB_ORDER (a label JOB_ORDER does not know goes after the job whose label begins it, else last)."""
    by_label = {s.get("label", s["suite"]): s for s in fresh}
    for suites in sources:
        for suite in suites:
            by_label.setdefault(suite.get("label", suite["suite"]), suite)
    order = {label: i for i, label in enumerate(JOB_ORDER)}

    def position(label: str) -> tuple:  # "tf 2026-11-28" right after "tf"
        if label in order:
            return (order[label], 0)
        parents = [known for known in JOB_ORDER if label.startswith(known + " ")]
        return (order[max(parents, key=len)], 1) if parents else (len(order), 0)

    labels = sorted(by_label, key=position)
    return [by_label[label] for label in labels]


# === Cross-framework rows: ours TF versus ours PyTorch ===
def _canonical(name: str) -> str:
    name = name.lower().replace("tf ", "").replace("pt ", "").replace("pytorch ", "").replace("tensorflow ", "")
    return " ".join(name.replace("-", " ").replace("_", " ").split())


def cross_framework(suites: list[dict]) -> list[dict]:
    """Rows for cases both model suites measured under the same name: PT ours time / TF ours time."""
    rows = []
    for size in ("small", "base"):
        pt = next((s for s in suites if s["suite"] == "pt" and s.get("size") == size and s.get("status") == "ok"), None)
        tf = next((s for s in suites if s["suite"] == "tf" and s.get("size") == size and s.get("status") == "ok"), None)
        if not pt or not tf or any(c["name"].lower().startswith("ours tf vs ours pt") for c in tf["cases"]):
            continue  # bench_tf measures ours TF against ours PT itself, in one process: keep those rows
        pt_cases = {_canonical(c["name"]): c for c in pt["cases"] if c.get("ours_s")}
        for c in tf["cases"]:
            other = pt_cases.get(_canonical(c["name"]))
            if other and c.get("ours_s"):
                row = common.case(f"{c['name']} ({size})", c["ours_s"], other["ours_s"],
                                  note="ratio = our PyTorch time / our TF time (> 1: TF faster)")
                rows.append(row)
    return rows


# === Main ===
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes where a suite offers them")
    p.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites (default: all of {','.join(SUITES)})")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: the PyTorch cases on a GPU")
    p.add_argument("--precisions", default="float32,bfloat16", help="with --device cuda: float32,bfloat16")
    p.add_argument("--base-size", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the models at base size (d_model 768, 6+6 layers); default: yes, no with --quick")
    p.add_argument("--repeats", type=int, default=None, help="at most this many timed calls per case (after the warm-up)")
    p.add_argument("--threads", type=int, default=None, help="threads for torch / tensorflow / OpenMP (default: library defaults)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per suite process (default 900, 600 with --quick)")
    p.add_argument("--budget-min", type=float, default=19.0,
                   help="minutes for the whole run, shared among the suite processes by weight (0: no limit; default 19)")
    p.add_argument("--out-dir", default=None, help="where results*.json and RESULTS*.md go")
    p.add_argument("--keep-from", action="append", default=[],
                   help="an earlier results.json: the suites this run does not run are kept from it, marked as not re-run")
    p.add_argument("--add-from", action="append", default=[],
                   help="a results.json of a suite run separately for this run (merged without the not-re-run mark)")
    p.add_argument("--suite-kwargs", default=None,
                   help='JSON {suite: {keyword: value}} for the suites\' run(), e.g. \'{"tf": {"cases": ["call"]}}\'')
    p.add_argument("--note", action="append", default=[],
                   help="a line for the head of RESULTS.md (e.g. the machine's load during separate runs); repeatable")
    p.add_argument("--ray-passages", type=int, default=None,
                   help="vectors of the Ray serving benchmark's index (default 1,000,000; 100,000 with --quick); "
                        "--skip ray leaves it out")
    p.add_argument("--skip", default="",
                   help="comma-separated job labels not to run, e.g. 'retriever index kinds' (see JOB_ORDER)")
    p.add_argument("--rewrite-report", action="store_true",
                   help="run nothing: write RESULTS*.md again from the results*.json in --out-dir (default benchmarks/)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--child-kwargs", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args.child, json.loads(args.child_kwargs or "{}"), args.child_out, args.threads)

    if args.rewrite_report:
        return rewrite_report(args.out_dir or HERE, "" if args.device == "cpu" else "_cuda")

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SUITES))
    if unknown:
        print(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}", file=sys.stderr)
        return 2
    if not only and not (args.keep_from or args.add_from):
        print("--only names no suite: give suites, or --add-from / --keep-from files to assemble", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = sorted(set(precisions) - set(common.PRECISIONS))
    if bad:
        print(f"unknown precision(s) {bad}; choose from {list(common.PRECISIONS)}", file=sys.stderr)
        return 2
    try:
        device = common.resolve_device(args.device)
    except (common.DeviceUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cuda_name = None
    if device != "cpu":
        import torch

        cuda_name = torch.cuda.get_device_name(device)
    common.set_threads(args.threads)
    timeout = args.timeout or (600.0 if args.quick else 900.0)
    budget_s = args.budget_min * 60 if args.budget_min else None
    suffix = "" if device == "cpu" else "_cuda"
    try:
        suite_kwargs = json.loads(args.suite_kwargs) if args.suite_kwargs else {}
    except ValueError as err:
        print(f"error: --suite-kwargs is not JSON: {err}", file=sys.stderr)
        return 2
    if not isinstance(suite_kwargs, dict) or not all(isinstance(v, dict) for v in suite_kwargs.values()):
        print("error: --suite-kwargs must be a JSON object of objects, e.g. '{\"tf\": {\"cases\": [\"call\"]}}'",
              file=sys.stderr)
        return 2
    if args.ray_passages is not None:
        if args.ray_passages < 2000:
            print("error: --ray-passages must be at least 2000", file=sys.stderr)
            return 2
        suite_kwargs.setdefault("ray", {})["n_passages"] = args.ray_passages
    sources = []
    for path, kept in [(p, False) for p in args.add_from] + [(p, True) for p in args.keep_from]:
        try:
            sources.append(load_previous(path, kept))
        except (OSError, ValueError) as err:
            print(f"error: cannot read {path}: {err}", file=sys.stderr)
            return 2
    committed = not args.quick and (set(only) == set(SUITES) or bool(sources))
    out_dir = args.out_dir or (HERE if committed else WORK_DIR)
    os.makedirs(out_dir, exist_ok=True)

    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    base_size = (not args.quick) if args.base_size is None else args.base_size
    jobs = plan_jobs(only, device, precisions, args.quick, base_size, args.repeats, suite_kwargs)
    skip = {label.strip() for label in args.skip.split(",") if label.strip()}
    jobs = [job for job in jobs if job["label"] not in skip]
    suites = []
    for i, job in enumerate(jobs):
        remaining = None if budget_s is None else budget_s - (time.perf_counter() - started)
        limit = job_timeout(jobs, i, remaining, budget_s, timeout)
        if limit < 20:
            suites.append({"suite": job["suite"], "label": job["label"], "size": job["size"], "cases": [],
                           "status": "skipped", "error": f"the {args.budget_min:g}-minute budget (--budget-min) was spent"})
            continue
        suites.append(spawn(job, args.threads, limit))
        if i + 1 < len(jobs):
            # the files so far, so that a run killed from outside (a machine's time limit) still leaves them
            _write_results(args, device, cuda_name, precisions, merge_suites(suites, sources), started, load_start,
                           out_dir, suffix, unfinished=[j["label"] for j in jobs[i + 1:]])

    json_path, md_path, markdown = _write_results(args, device, cuda_name, precisions, merge_suites(suites, sources),
                                                  started, load_start, out_dir, suffix, assembled=not jobs)
    print("\n" + markdown)
    print(f"\nwrote {os.path.relpath(json_path)} and {os.path.relpath(md_path)} in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def rewrite_report(out_dir: str, suffix: str) -> int:
    """RESULTS{suffix}.md again from results{suffix}.json (after a change of the report's layout)."""
    json_path = os.path.join(out_dir, f"results{suffix}.json")
    try:
        with open(json_path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError) as err:
        print(f"error: cannot read {json_path}: {err}", file=sys.stderr)
        return 2
    md_path = os.path.join(out_dir, f"RESULTS{suffix}.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(write_markdown(results) + "\n")
    print(f"wrote {os.path.relpath(md_path)} from {os.path.relpath(json_path)}")
    return 0


def _write_results(args, device: str, cuda_name: Optional[str], precisions: list[str], suites: list[dict],
                   started: float, load_start, out_dir: str, suffix: str,
                   unfinished: Optional[list[str]] = None, assembled: bool = False) -> tuple[str, str, str]:
    """Write results{suffix}.json and RESULTS{suffix}.md; `unfinished` lists the jobs still to run."""
    threads_used = {}
    for s in suites:
        for key, value in (s.get("runtime") or {}).items():
            if key != "env" and key not in threads_used and key != "cuda_device":
                threads_used[key] = value
    results = {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": _command(),
        "commit": common.git_commit(),
        "quick": args.quick,
        "device": device,
        "cuda_device": cuda_name,
        "precisions": precisions if device != "cpu" else ["float32"],
        "machine": common.machine_info(),
        "versions": common.versions(),
        "threads_requested": args.threads,
        "threads_used": threads_used,
        "timing": {"warmup": common.WARMUP, "repeats": common.repeats_for(args.quick), "statistic": "median"},
        "load_average": {"start": load_start,
                         "end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None},
        "suites": suites,
        "cross": cross_framework(suites),
        "wall_s": time.perf_counter() - started,
    }
    if getattr(args, "note", None):
        results["notes"] = list(args.note)
    if assembled:  # nothing ran now: the sections come from --add-from / --keep-from files
        results["assembled"] = True
        results["wall_s"] = sum(s.get("process_wall_s") or 0.0 for s in suites if not s.get("not_rerun"))
        results.pop("load_average")
    if unfinished:
        results["missing"] = [f"{label}: not run yet (these files were written before the run's end)"
                              for label in unfinished]
    json_path = os.path.join(out_dir, f"results{suffix}.json")
    md_path = os.path.join(out_dir, f"RESULTS{suffix}.md")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, default=_json_default)
    markdown = write_markdown(results)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown + "\n")
    return json_path, md_path, markdown


if __name__ == "__main__":
    sys.exit(main())

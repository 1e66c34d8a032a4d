"""Import hygiene: what `import rag_core`, `import rag_pt` + a forward pass and `import rag_tf` + a call
load, how long the import and the call take and the peak memory of the process, in each environment.

Every case runs in a fresh interpreter with everything installed (torch, tensorflow, Keras 3 and, in the
oracle environment, tf-keras) and without the variables that steer transformers or Keras
(`USE_TF`, `USE_TORCH`, `TF_USE_LEGACY_KERAS` are removed), as a user would start it. Each process reports:
the seconds of its import statement and of the forward pass / call after it, its peak RSS (VmHWM of
/proc/self/status; `ru_maxrss` would carry the parent's peak across exec), which of torch / tensorflow /
tf_keras / keras / transformers are in `sys.modules` after the import and after the call, and, for torch and
tensorflow, the chain of modules whose import brought them in (a meta-path hook records the stack).

    python -m benchmarks.bench_imports            # this environment and the oracle one (.venv-oracle)
    python -m benchmarks.bench_imports --here     # this environment only

Rules checked: `import rag_core` imports neither torch nor tensorflow; `import rag_pt` and a forward pass
import no tensorflow; `import rag_tf` and a call import no torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, the import statement, the first use of its classes (the lazy package imports its modules then),
#  a call with them or "", the frameworks that must not be imported)
CASES = [
    ("rag_core", "import rag_core", "from rag_core import RagConfig, RagRetriever, RagTokenizer", "",
     ("torch", "tensorflow")),
    ("rag_pt", "import rag_pt", "from rag_pt import RagTokenForGeneration", "\n".join([
        "import torch",
        "from tests.harness.configs import tiny_rag_config",
        "m = RagTokenForGeneration(tiny_rag_config()).eval()",
        "m(context_input_ids=torch.full((3, 4), 5), context_attention_mask=torch.ones(3, 4, dtype=torch.long),"
        " doc_scores=torch.zeros(1, 3), decoder_input_ids=torch.tensor([[2, 5]]))",
    ]), ("tensorflow",)),
    ("rag_tf", "import rag_tf", "from rag_tf import TFRagTokenForGeneration", "\n".join([
        "import numpy as np",
        "from tests.harness.configs import tiny_rag_config",
        "m = TFRagTokenForGeneration(tiny_rag_config())",
        "m(context_input_ids=np.full((3, 4), 5, np.int32), context_attention_mask=np.ones((3, 4), np.int32),"
        " doc_scores=np.zeros((1, 3), np.float32), decoder_input_ids=np.array([[2, 5]], np.int32))",
    ]), ("torch",)),
]
STEPS = ("import", "classes", "call")
CALL_LABEL = {"rag_core": "", "rag_pt": "a forward pass of a tiny RagTokenForGeneration",
              "rag_tf": "a call of a tiny TFRagTokenForGeneration"}
WATCHED = ("torch", "tensorflow", "tf_keras", "keras", "transformers")

PROBE = r'''
import sys, time, traceback
chains = {}

class _Watch:
    """Records the stack when torch / tensorflow is executed (imported), not merely looked up
    (`importlib.util.find_spec` availability checks also reach `find_spec`)."""

    def find_spec(self, name, path=None, target=None):
        if name not in ("torch", "tensorflow") or name in chains:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            if name not in chains:
                frames = [f for f in traceback.extract_stack()[:-1] if "<frozen" not in f.filename]
                chains[name] = [[f.filename, f.lineno, (f.line or "").strip()] for f in frames]
            return original(module)

        loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Watch())

def _hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

def _loaded():
    return sorted({n.split(".")[0] for n in sys.modules} & set(WATCHED))

WATCHED = %(watched)r
out = {"chains": chains}
for step, code in %(steps)r:
    start = time.perf_counter()
    exec(compile(code, "<" + step + ">", "exec"))
    out[step + "_s"] = time.perf_counter() - start
    out["loaded_after_" + step] = _loaded()
    out["rss_after_" + step + "_mib"] = _hwm()
print("RESULT " + __import__("json").dumps(out))
'''


def _module_chain(frames: list) -> list[str]:
    """The stack of an import as `module:line` (dotted names relative to site-packages or the repository),
    outermost first, without importlib's own frames and repeated modules; each with its source line."""
    out = []
    for path, line, text in frames:
        if "importlib" in path or path.startswith("<") or path.endswith("bench_imports.py"):
            continue
        p = Path(path)
        parts = p.with_suffix("").parts
        for anchor in ("site-packages", ROOT.name):
            if anchor in parts:
                parts = parts[len(parts) - parts[::-1].index(anchor):]
                break
        name = ".".join(x for x in parts if x != "__init__")
        if not out or out[-1].split(":")[0] != name:
            out.append(f"{name}:{line}" + (f" `{text}`" if text else ""))
        else:
            out[-1] = f"{name}:{line}" + (f" `{text}`" if text else "")
    return out


def probe(python: str, steps: list[tuple[str, str]]) -> dict:
    """Run `steps` ((name, code), ...) in one fresh interpreter; seconds, loaded frameworks and VmHWM after each."""
    env = {k: v for k, v in os.environ.items() if k not in ("USE_TF", "USE_TORCH", "TF_USE_LEGACY_KERAS")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    code = PROBE % {"watched": WATCHED, "steps": steps}
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        tail = out.stderr.strip().splitlines()[-1:] if out.stderr.strip() else [f"exit {out.returncode}"]
        return {"error": tail[0][:300]}
    row = json.loads(line[len("RESULT "):])
    row["chains"] = {k: _module_chain(v) for k, v in row["chains"].items()}
    row["process_s"] = time.perf_counter() - started
    return row


def environment(python: str) -> dict:
    code = ("import json, sys\nfrom importlib import metadata\nout = {'python': sys.version.split()[0]}\n"
            "for d in ('transformers', 'torch', 'tensorflow', 'keras', 'tf-keras'):\n"
            "    try:\n        out[d] = metadata.version(d)\n    except metadata.PackageNotFoundError:\n        pass\n"
            "print(json.dumps(out))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-300:]}


def measure_env(python: str, repeats: int) -> dict:
    """Every case `repeats` times in fresh processes: the best import / call seconds, the largest peak RSS."""
    result = {"python": python, "versions": environment(python), "cases": {}}
    for name, imp, classes, call, forbidden in CASES:
        steps = [(step, code) for step, code in zip(STEPS, (imp, classes, call)) if code]
        runs = [probe(python, steps) for _ in range(repeats)]
        good = [r for r in runs if "error" not in r]
        if not good:
            result["cases"][name] = {"error": runs[0]["error"], "forbidden": list(forbidden)}
            continue
        last = good[-1]
        row = {"runs": len(good), "forbidden": list(forbidden), "chains": last["chains"]}
        for step, _ in steps:
            row[f"{step}_s"] = min(r[f"{step}_s"] for r in good)
            row[f"rss_after_{step}_mib"] = max(r[f"rss_after_{step}_mib"] for r in good)
            row[f"loaded_after_{step}"] = last[f"loaded_after_{step}"]
        final = steps[-1][0]
        row["peak_rss_mib"], row["loaded"] = row[f"rss_after_{final}_mib"], row[f"loaded_after_{final}"]
        row["violations"] = [f for f in forbidden if f in row["loaded"]]
        result["cases"][name] = row
    return result


def _short_chain(chain: list[str]) -> str:
    """The chain from the first library module (rag_*) on: `a:line → b:line → ...`."""
    start = next((i for i, c in enumerate(chain) if c.startswith("rag_")), 0)
    return " → ".join(chain[start:])


def tables(envs: dict) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    fmt_loaded = lambda names: ", ".join(names) or "none"  # noqa: E731
    for label, env in envs.items():
        v = env.get("versions", {})
        stack = ", ".join(f"{k} {v[k]}" for k in ("transformers", "torch", "tensorflow", "keras", "tf-keras") if k in v)
        if v and "error" not in v:
            notes.append(f"{label}: python {v.get('python', '?')}, {stack}" + (f" ({env['python']})" if env.get("python") else ""))
        for name, imp, classes, call, forbidden in CASES:
            row = env["cases"].get(name, {})
            if row.get("error") or not row:
                rows.append([label, name] + ["—"] * 5 + [f"error: {row['error']}" if row else "not measured"])
                continue
            verdict = "ok" if not row["violations"] else "**imports " + ", ".join(row["violations"]) + "**"
            steps = [f"`{imp}`: {row['import_s']:.2f} s, {row['rss_after_import_mib']:,.0f} MiB, "
                     f"{fmt_loaded(row['loaded_after_import'])}",
                     f"`{classes}`: +{row['classes_s']:.2f} s, {row['rss_after_classes_mib']:,.0f} MiB, "
                     f"{fmt_loaded(row['loaded_after_classes'])}"]
            if call:
                steps.append(f"{CALL_LABEL[name]}: +{row['call_s']:.2f} s, {row['rss_after_call_mib']:,.0f} MiB, "
                             f"{fmt_loaded(row['loaded_after_call'])}")
            total = sum(row.get(f"{step}_s", 0.0) for step in STEPS)
            rows.append([label, name, *(steps + [""] * (3 - len(steps))), f"{total:.2f} s",
                         f"{row['peak_rss_mib']:,.0f} MiB", f"no {' / '.join(forbidden)}: {verdict}"])
            for fw in row["violations"]:
                chain = row["chains"].get(fw)
                if chain:
                    notes.append(f"{label} ({stack}): {name} imports {fw} through {_short_chain(chain)}")
    return [{
        "title": "Import hygiene: one fresh process per case and environment, everything installed, no USE_TF / "
                 "USE_TORCH / TF_USE_LEGACY_KERAS; each step: its seconds, the peak RSS after it, the frameworks "
                 "loaded after it (best seconds and largest RSS of the runs)",
        "columns": ["environment", "package", "the import statement", "first use of its classes", "a call",
                    "total", "peak RSS", "rule"],
        "rows": rows,
    }], notes


def run(quick: bool = False, here_only: bool = False, **_ignored) -> dict:
    from . import common

    repeats = 1 if quick else 2
    envs = {".venv (main)": measure_env(sys.executable, repeats)}
    if not here_only:
        from .run_all import oracle_python

        python, why = oracle_python()
        if python is None:
            envs[".venv-oracle"] = {"versions": {}, "cases": {name: {"error": why} for name, *_ in CASES}}
        else:
            envs[".venv-oracle"] = measure_env(python, repeats)
    table, notes = tables(envs)
    return common.suite_result("imports", [], tables=table, notes=notes, environments=envs,
                               config={"repeats per case": repeats})


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--here", action="store_true", help="this environment only (not the oracle one)")
    parser.add_argument("--quick", action="store_true", help="one process per case instead of two")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, here_only=args.here)
    from .report import generic_table

    for table in result["tables"]:
        print("\n".join(generic_table(table)))
    for note in result["notes"]:
        print("note:", note)
    work = ROOT / "benchmarks" / "_work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "imports.json").write_text(json.dumps(result["environments"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Import hygiene: what `import rag_core`, `import rag_pt` + a forward pass and `import rag_tf` + a call
load, how long they take and the peak memory of the process. Each case runs in a fresh process.

    python -m benchmarks.bench_imports            # prints a markdown table, writes _work/imports-<env>.json

Run it with each environment's python (the main `.venv` and the oracle `.venv-oracle`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "import rag_core": "import rag_core",
    "rag_core: RagConfig + RagTokenizer imported": "import rag_core; from rag_core import RagConfig, RagTokenizer",
    "import rag_pt + forward": "\n".join([
        "import numpy as np, torch, rag_pt",
        "from tests.harness.configs import tiny_rag_config",
        "m = rag_pt.RagTokenForGeneration(tiny_rag_config()).eval()",
        "m(context_input_ids=torch.full((3, 4), 5), context_attention_mask=torch.ones(3, 4, dtype=torch.long),"
        " doc_scores=torch.zeros(1, 3), decoder_input_ids=torch.tensor([[2, 5]]))",
    ]),
    "import rag_tf + call": "\n".join([
        "import numpy as np, rag_tf",
        "from tests.harness.configs import tiny_rag_config",
        "m = rag_tf.TFRagTokenForGeneration(tiny_rag_config())",
        "m(context_input_ids=np.full((3, 4), 5, np.int32), context_attention_mask=np.ones((3, 4), np.int32),"
        " doc_scores=np.zeros((1, 3), np.float32), decoder_input_ids=np.array([[2, 5]], np.int32))",
    ]),
}

PROBE = """
import resource, sys, time
start = time.perf_counter()
{code}
elapsed = time.perf_counter() - start
loaded = sorted({{name.split('.')[0] for name in sys.modules}} & {{'torch', 'tensorflow', 'tf_keras', 'transformers'}})
print('RESULT', elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ','.join(loaded))
"""


def run_case(code: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True, env=env,
                         cwd=str(ROOT), timeout=600)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), None)
    if out.returncode != 0 or line is None:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    _, seconds, rss_mib, loaded = line.split(" ", 3)
    return {"seconds": float(seconds), "peak_rss_mib": float(rss_mib), "loaded": loaded.strip().split(",") if
            loaded.strip() else [], "process_seconds": time.perf_counter() - started}


def main() -> int:
    import transformers

    results = {name: run_case(code) for name, code in CASES.items()}
    tag = f"transformers {transformers.__version__}"
    print(f"\n{tag} (python {sys.version.split()[0]})\n")
    print("| case | seconds | peak RSS (MiB) | frameworks loaded |")
    print("|---|---|---|---|")
    for name, row in results.items():
        if "error" in row:
            print(f"| {name} | error: {row['error']} | | |")
        else:
            print(f"| {name} | {row['seconds']:.2f} | {row['peak_rss_mib']:.0f} | {', '.join(row['loaded']) or 'none'} |")
    work = ROOT / "benchmarks" / "_work"
    work.mkdir(parents=True, exist_ok=True)
    (work / f"imports-{transformers.__version__}.json").write_text(json.dumps({"transformers": tag, **results},
                                                                            indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# The GPU benchmark as one short script for a lent GPU machine (issue 7, item 3): the PyTorch cases
# in float32 and bfloat16, ours against transformers 4.57's RAG on the same card, faiss on the CPU.
# Writes results_cuda.json and RESULTS_cuda.md (naming the card) into $OUT, or benchmarks/ without it.
#
# The GPU image has its own python3 with a CUDA torch but not this project's pins (it carries
# transformers 5, and no faiss or datasets). Before the session, download the wheels it lacks into
# .whl/ (git-ignored via .git/info/exclude), for Python 3.12 manylinux x86-64, e.g.
#   transformers==4.57.6 tokenizers==0.22.2 faiss-cpu==1.15.1 datasets dill multiprocess
# and a vocab for the benchmark tokenizer (tests.harness uses the MiniLM package's vocab.txt).
# Then: run(command="bash benchmarks/run_cuda.sh", carry=[".whl"], timeout_s=480).
# Not run yet: no GPU was lent to the session that wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export USE_TF=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 -m benchmarks.run_all --device cuda --out-dir "${OUT:-benchmarks}" "$@"

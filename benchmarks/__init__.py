"""Benchmarks: ours against the original RAG of transformers 4.57, side by side in one process.

`make bench` (= `python -m benchmarks.run_all`) runs every suite and writes `benchmarks/results.json`
and `benchmarks/RESULTS.md`. Each suite is a module `bench_<name>.py` with a function
`run(quick: bool = False, ...) -> dict` built with the helpers of `benchmarks.common`:

| module | what it measures |
|---|---|
| `bench_retriever` | `RagRetriever.__call__` and the index kinds |
| `bench_pt` | PyTorch models: training step, RAG-Token / RAG-Sequence `generate` (CPU; `--device cuda`) |
| `bench_tf` | TensorFlow models: `call`, `fit`, `generate` (eager and XLA) |
| `bench_memory` | peak resident memory of a process serving a 200,000-passage index of each kind |

Benchmarks are scripts, not tests: nothing here is imported by the library.
"""

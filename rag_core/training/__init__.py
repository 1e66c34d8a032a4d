"""Framework-neutral parts of the fine-tuning and evaluate commands (`python -m rag_pt.finetune`,
`rag_tf.finetune`, `rag_pt.evaluate`, `rag_tf.evaluate`): data files, the shared command-line
options, the run folder and its bookkeeping, and evaluation on numpy. Imports neither torch nor
tensorflow.

- `data`: question/answer files (JSONL, CSV, TSV, `.source`/`.target`), batch order, tokenizing;
- `cli`: one argument parser per command, the same for both frameworks;
- `components`: config, tokenizers and retriever resolved from the arguments;
- `run`: the run folder (config, metrics, predictions, checkpoints), best-k and early stopping;
- `evaluation`: end-to-end and retrieval evaluation given a framework's two hooks.
"""

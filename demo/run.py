"""`python -m demo.run --framework pt|tf [--quick]`: the demo from the command line or from Python.

    >>> from demo.run import main
    >>> results = main(["--quick", "--output-dir", "/tmp/demo"])   # doctest: +SKIP
    >>> results["models"]["rag_token"]["em"] > results["models"]["baseline"]["em"]   # doctest: +SKIP
    True

Writes, under `--output-dir` (default `demo_output/`): `cache/` (tokenizer, indexes; reused by the
next run), `runs-<framework>[-quick]/` (the data files, the initial checkpoint, and one run folder
per model as `python -m rag_pt.finetune` writes it, with the evaluate commands' predictions),
`results-<framework>[-quick].json` and `rag-demo-<framework>[-quick].png`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("pt", "tf"), default="pt")
    parser.add_argument("--quick", action="store_true", help="the whole path on a slice of the data (under a minute)")
    parser.add_argument("--output-dir", default="demo_output", help="cache, results and plot (default: demo_output/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default: 1100, quick 250)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: 32, quick 16)")
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default: 1e-3)")
    parser.add_argument("--train-n-docs", type=int, default=None, help="passages per question in training (default: 1: RAG-Token and RAG-Sequence share one run)")
    parser.add_argument("--code-repeats", type=int, default=None,
                        help="times each code question appears in the training files (default: 2)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the framework (default: its own)")
    parser.add_argument("--workers", type=int, default=None, help="PyTorch processes side by side, one thread each (default: one per core)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="validate on the development questions every N steps (default: once, at the end)")
    parser.add_argument("--dev-only", action="store_true",
                        help="a tuning run: fine-tune and validate on the development questions, never ask the test questions")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _prepare_environment(framework: str, threads: Optional[int]) -> None:
    # transformers imports every framework it finds unless told otherwise; one is enough here.
    # Must happen before transformers is first imported.
    if "transformers" not in sys.modules:
        os.environ.setdefault("USE_TF" if framework == "pt" else "USE_TORCH", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads is not None:
        if framework == "pt":
            import torch

            torch.set_num_threads(threads)
        else:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)


def main(argv: Optional[list[str]] = None) -> dict:
    """Run the demo; print the table; return the results (exact match, recall, hot swap, timings)."""
    args = parse_args(argv)
    started = time.perf_counter()
    _prepare_environment(args.framework, args.threads)

    from .common import Settings, Stages, seed_everything
    from .knowledge import build_knowledge
    from .report import format_table, write_plot

    settings = Settings.for_run(args.quick, args.seed, train_steps=args.steps, workers=args.workers,
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                train_n_docs=args.train_n_docs, code_repeats=args.code_repeats,
                                eval_every=args.eval_every,
                                dev_only=args.dev_only or None)
    seed_everything(settings.seed)
    stages = Stages()
    cache_dir = os.path.join(args.output_dir, "cache")
    os.makedirs(cache_dir, exist_ok=True)

    with stages.stage("knowledge base"):
        kb = build_knowledge(quick=settings.quick, seed=settings.seed)
    if args.framework == "pt":
        from . import experiment_pt as experiment
    else:
        from . import experiment_tf as experiment
    suffix = f"{args.framework}{'-quick' if settings.quick else ''}{'-dev' if settings.dev_only else ''}"
    work_dir = os.path.join(args.output_dir, f"runs-{suffix}")
    results = experiment.run(kb, settings, stages, cache_dir, progress=not args.no_progress, work_dir=work_dir)

    results.update(
        quick=settings.quick,
        settings=settings.to_dict(),
        sizes={
            "passages": len(kb.regions),
            "train_questions": len(kb.train),
            "dev_questions": len(kb.dev),
            "dev_regions": len({q.region for q in kb.dev}),
            "test_questions": len(kb.test),
            "test_regions": len({q.region for q in kb.test}),
        },
        timings=dict(stages.seconds),
        cpu_timings=dict(stages.cpu_seconds),
        total_seconds=time.perf_counter() - started,
    )
    results["plot"] = write_plot(results, os.path.join(args.output_dir, f"rag-demo-{suffix}.png"))
    with open(os.path.join(args.output_dir, f"results-{suffix}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, default=float)
    print(format_table(results), flush=True)
    print(f"plot: {results['plot']}", flush=True)
    return results


if __name__ == "__main__":
    main()

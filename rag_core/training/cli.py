"""The command-line options of `python -m rag_pt.finetune` / `rag_tf.finetune` and of the evaluate
commands: one builder, so both frameworks take exactly the same flags with the same defaults."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

MODEL_TYPES = ("rag_token", "rag_sequence")
SCHEDULERS = ("linear", "constant")
EVAL_MODES = ("e2e", "retrieval")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model_type", choices=MODEL_TYPES, default="rag_token")
    group.add_argument("--model_name_or_path", default=None,
                       help="a RAG checkpoint folder (config.json, weights, question_encoder_tokenizer/, "
                            "generator_tokenizer/), such as a checkpoint of an earlier run")
    group.add_argument("--question_encoder_name_or_path", default=None,
                       help="instead of --model_name_or_path: a question encoder folder (DPR or BERT, with its tokenizer)")
    group.add_argument("--generator_name_or_path", default=None,
                       help="instead of --model_name_or_path: a seq2seq generator folder (BART or T5, with its tokenizer)")
    group.add_argument("--index_path", default=None,
                       help="a passage index folder from `python -m rag_core.build_index` (or a folder holding "
                            "passages/ and index.faiss); default: the index the checkpoint's config names")
    group.add_argument("--ray_index", default=None, metavar="NAME",
                       help="retrieve from the Ray index service of this name (rag_core.RayIndexService), shared by "
                            "every process of the run, instead of loading an index in each process")
    group.add_argument("--ray_address", default=None, help="with --ray_index: the Ray cluster (default: RAY_ADDRESS, "
                                                           "or a cluster started on this machine with `ray start`)")
    group.add_argument("--ray_namespace", default="rag_twin", help="with --ray_index: the service's Ray namespace")
    group.add_argument("--n_docs", type=int, default=None, help="passages per question while training (default: config)")
    group.add_argument("--max_combined_length", type=int, default=None,
                       help="token limit of a passage + question context (default: config)")
    group.add_argument("--max_source_length", type=int, default=128, help="token limit of a question")
    group.add_argument("--max_target_length", type=int, default=25, help="token limit of an answer (and of generation)")


def _data_options(parser: argparse.ArgumentParser, training: bool) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data_dir", default=None,
                       help="folder with train/val/test files: {split}.jsonl, .csv, .tsv, or the original's "
                            "{split}.source + {split}.target")
    if training:
        group.add_argument("--train_file", default=None, help="training data (overrides --data_dir)")
        group.add_argument("--validation_file", default=None, help="validation data (overrides --data_dir)")
    else:
        group.add_argument("--eval_file", default=None, help="the questions to evaluate (overrides --data_dir)")
        group.add_argument("--split", default="test", help="with --data_dir: the split to evaluate (default: test)")
        group.add_argument("--gold_data_path", default=None,
                           help="retrieval mode: the original's gold file, `question<TAB>title1<TAB>title2...` per line")
    group.add_argument("--question_column", default="question")
    group.add_argument("--answers_column", default="answers")
    group.add_argument("--titles_column", default="titles", help="gold passage titles or ids (retrieval evaluation)")
    group.add_argument("--answer_separator", default="|",
                       help="separator of several answers (or titles) joined in one string")
    group.add_argument("--max_eval_examples", type=int, default=None, help="evaluate on the first N examples only")


def _generation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation (validation and evaluation)")
    group.add_argument("--eval_batch_size", type=int, default=8)
    group.add_argument("--eval_n_docs", type=int, default=None, help="passages per question when generating")
    group.add_argument("--num_beams", type=int, default=1)


def finetune_parser(prog: str) -> argparse.ArgumentParser:
    """The fine-tuning command's parser (the same for both frameworks)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Fine-tune a RAG model on question/answer pairs, validating by exact match.")
    _model_options(parser)
    _data_options(parser, training=True)
    _generation_options(parser)
    group = parser.add_argument_group("training")
    group.add_argument("--output_dir", required=True, help="the run folder (refused if it holds a run, unless "
                                                           "--resume or --overwrite)")
    group.add_argument("--resume", action="store_true", help="continue the run in --output_dir from its last checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace the run in --output_dir")
    group.add_argument("--freeze_question_encoder", action="store_true")
    group.add_argument("--cache_retrieval", action="store_true",
                       help="with --freeze_question_encoder: retrieve each training question's passages once, before "
                            "the first step, and train on the stored passages and scores (what every step would "
                            "compute again: a frozen encoder always retrieves the same passages)")
    group.add_argument("--retrieval_cache_dir", default=None,
                       help="with --cache_retrieval: keep the question vectors and retrievals in this folder, keyed "
                            "by the encoder's weight files, the tokenizers, the index files and the questions, so "
                            "that other runs with the same frozen encoder and questions read them instead")
    group.add_argument("--extra_train_file", default=None,
                       help="more training examples, whose passages come from --extra_index_path instead of the "
                            "run's index, e.g. counterfactual augmentation: the training questions against an edited "
                            "copy of the knowledge base, with the edited answers (needs --cache_retrieval)")
    group.add_argument("--extra_index_path", default=None, help="the index of --extra_train_file")
    group.add_argument("--label_smoothing", type=float, default=0.0)
    group.add_argument("--learning_rate", type=float, default=3e-5)
    group.add_argument("--weight_decay", type=float, default=0.0)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping by global norm (0: none)")
    group.add_argument("--lr_scheduler", choices=SCHEDULERS, default="linear")
    group.add_argument("--warmup_steps", type=int, default=0)
    group.add_argument("--lr_decay_start", type=float, default=0.0,
                       help="linear scheduler: the share of the steps the rate stays constant before it decays "
                            "(default 0: the decay starts after the warm-up)")
    group.add_argument("--min_lr_ratio", type=float, default=0.0,
                       help="linear scheduler: the rate decays to this share of --learning_rate (default 0)")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--max_steps", type=int, default=-1, help="optimizer steps; > 0 overrides --num_train_epochs")
    group.add_argument("--num_train_epochs", type=float, default=3.0)
    group.add_argument("--train_batch_size", type=int, default=8, help="examples per batch (per process)")
    group.add_argument("--eval_steps", type=int, default=None,
                       help="validate every N optimizer steps (default: once per epoch)")
    group.add_argument("--save_steps", type=int, default=None,
                       help="also write the resumable checkpoint every N steps (it is written at each validation)")
    group.add_argument("--logging_steps", type=int, default=10)
    group.add_argument("--early_stopping_patience", type=int, default=None,
                       help="stop after N validations without a better EM")
    group.add_argument("--save_total_limit", type=int, default=3, help="keep the best N checkpoints by validation EM")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def evaluate_parser(prog: str) -> argparse.ArgumentParser:
    """The evaluate command's parser (the same for both frameworks)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Evaluate a RAG model: end to end (EM, F1) or its retrieval (precision@k, recall@k).")
    _model_options(parser)
    _data_options(parser, training=False)
    _generation_options(parser)
    group = parser.add_argument_group("evaluation")
    group.add_argument("--eval_mode", choices=EVAL_MODES, default="e2e")
    group.add_argument("--k", type=int, default=None, help="retrieval mode: passages per question (default: eval_n_docs)")
    group.add_argument("--gold_key", choices=("title", "id"), default="title",
                       help="retrieval mode: compare gold items with passage titles or with passage ids")
    group.add_argument("--predictions_path", default=None, help="where to write predictions (JSON lines)")
    group.add_argument("--metrics_path", default=None, help="where to write the metrics (JSON)")
    group.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def _check_common(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    checkpoint = args.model_name_or_path is not None
    pair = args.question_encoder_name_or_path is not None or args.generator_name_or_path is not None
    if checkpoint == pair:
        parser.error("give --model_name_or_path (a RAG checkpoint), or both --question_encoder_name_or_path and "
                     "--generator_name_or_path")
    if pair and (args.question_encoder_name_or_path is None or args.generator_name_or_path is None):
        parser.error("--question_encoder_name_or_path and --generator_name_or_path go together")
    for name in ("n_docs", "eval_n_docs", "max_combined_length", "eval_batch_size", "num_beams", "max_eval_examples",
                 "max_source_length", "max_target_length"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")


def parse_finetune_args(argv: Optional[Sequence[str]], prog: str) -> argparse.Namespace:
    parser = finetune_parser(prog)
    args = parser.parse_args(argv)
    _check_common(parser, args)
    if args.data_dir is None and (args.train_file is None or args.validation_file is None):
        parser.error("give --data_dir, or --train_file and --validation_file")
    for name in ("train_batch_size", "gradient_accumulation_steps", "save_total_limit", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("eval_steps", "save_steps", "early_stopping_patience"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    if args.max_steps <= 0 and args.num_train_epochs <= 0:
        parser.error("give --max_steps > 0 or --num_train_epochs > 0")
    if not 0.0 <= args.label_smoothing < 1.0:
        parser.error(f"--label_smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.learning_rate <= 0 or args.warmup_steps < 0:
        parser.error("--learning_rate must be > 0 and --warmup_steps >= 0")
    if not 0.0 <= args.lr_decay_start < 1.0 or not 0.0 <= args.min_lr_ratio <= 1.0:
        parser.error("--lr_decay_start must be in [0, 1) and --min_lr_ratio in [0, 1]")
    if args.cache_retrieval and not args.freeze_question_encoder:
        parser.error("--cache_retrieval needs --freeze_question_encoder (a trained encoder retrieves other passages "
                     "after every step)")
    if args.retrieval_cache_dir is not None and not args.cache_retrieval:
        parser.error("--retrieval_cache_dir goes with --cache_retrieval")
    if (args.extra_train_file is None) != (args.extra_index_path is None):
        parser.error("--extra_train_file and --extra_index_path go together")
    if args.extra_train_file is not None and not args.cache_retrieval:
        parser.error("--extra_train_file needs --cache_retrieval (its passages are retrieved once, from "
                     "--extra_index_path)")
    return args


def parse_evaluate_args(argv: Optional[Sequence[str]], prog: str) -> argparse.Namespace:
    parser = evaluate_parser(prog)
    args = parser.parse_args(argv)
    _check_common(parser, args)
    if args.eval_file is None and args.data_dir is None and args.gold_data_path is None:
        parser.error("give --eval_file, --data_dir (with --split), or --gold_data_path (retrieval mode)")
    if args.gold_data_path is not None and args.eval_mode != "retrieval":
        parser.error("--gold_data_path holds gold titles: it goes with --eval_mode retrieval")
    if args.k is not None and args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    return args


def run_arguments(args: argparse.Namespace) -> dict:
    """The arguments as saved in the run's `config.json` (JSON values only)."""
    return {k: v for k, v in sorted(vars(args).items())}

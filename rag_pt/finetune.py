"""`python -m rag_pt.finetune`: fine-tune a PyTorch RAG model on question/answer pairs.

    python -m rag_pt.finetune --model_name_or_path rag_checkpoint --index_path kb_index \\
        --data_dir data --output_dir run --max_steps 1000 --eval_steps 100 --learning_rate 3e-5

Options, data files, the run folder and validation are shared with `python -m rag_tf.finetune`
(`rag_core.training`); this module is the PyTorch training loop. It is a plain loop rather than
transformers' `Trainer` because what a RAG run needs is exactly what `Trainer` does differently:
validation generates answers with retrieval and records their passages; checkpoints are kept as the
best k by validation EM (`Trainer` keeps the latest n plus one best); and a checkpoint's optimizer,
scheduler and RNG state are written as tensors only (`torch.load(weights_only=True)`), with the
data order a function of (seed, epoch), so `--resume` continues exactly where the run stopped.

- Checkpoints: `checkpoints/step-N/` (the best by validation EM) and `checkpoints/last/` (resumable:
  plus `optimizer.pt`, `scheduler.pt`, `rng_state.pt`, `trainer_state.json`), each a model folder
  (`model.safetensors`, config, tokenizers) that `from_pretrained` and the evaluate commands read.
- Logs: `metrics.jsonl` (JSON lines) and TensorBoard event files under `tensorboard/`; a tqdm bar.
- `--freeze_question_encoder --cache_retrieval`: each training question's passages are retrieved once,
  before the first step (`rag_core.training.cached`), and the steps read the stored contexts and scores.
- Ctrl-C: the first one finishes the current step, writes `checkpoints/last/` and exits (status 130);
  `--resume` continues from there.
- Several processes: `torchrun --nproc_per_node 2 -m rag_pt.finetune ...` trains data parallel
  (gloo on CPU, NCCL on GPUs); each process reads its share of every batch, rank 0 validates and writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from typing import Any, Callable, Optional, Sequence

import torch

from rag_core.errors import RagError
from rag_core.training import run as runs
from rag_core.training.cached import cached_training_data
from rag_core.training.cli import parse_finetune_args, run_arguments
from rag_core.training.components import resolve_components
from rag_core.training.data import Columns, batch_indices, encode_batch, micro_batches, read_examples, split_file
from rag_core.training.evaluation import e2e_metrics, predict_answers

from .evaluate import Predictor, load_model

PROG = "python -m rag_pt.finetune"
OPTIMIZER, SCHEDULER, RNG_STATE = "optimizer.pt", "scheduler.pt", "rng_state.pt"


class _Interrupt:
    """The first Ctrl-C asks the loop to stop at the next step boundary; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if _in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _quiet_transformers():
    """No per-checkpoint "Writing model shards" bars from transformers inside the training bar."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


class _Distributed:
    """Rank and world size under `torchrun` (one process otherwise)."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.started_here = False
        if self.world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
            self.started_here = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def broadcast_flag(self, value: bool) -> bool:
        if self.world_size == 1:
            return value
        flag = torch.tensor([int(value)])
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.item() / self.world_size

    def close(self) -> None:
        if self.started_here:
            torch.distributed.destroy_process_group()


class _EventWriter:
    """TensorBoard scalars (`add_scalar`), written with tensorboard's own record format and protos.

    Not `torch.utils.tensorboard`: its file writer goes through `tensorboard.compat.tf`, which imports
    TensorFlow whenever it is installed, and rag_pt never imports TensorFlow.
    """

    def __init__(self, folder: str):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(folder, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._event_pb2 = event_pb2
        self._file = open(os.path.join(folder, name), "wb")
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._file.flush()

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._file.close()


def _tensorboard(path: str):
    try:
        return _EventWriter(path)
    except ImportError:  # the `train` extra brings tensorboard; without it, JSON lines only
        return None


def _load_examples(args, split: str, path: Optional[str]):
    columns = Columns(args.question_column, args.answers_column, args.titles_column, args.answer_separator)
    return read_examples(path if path is not None else split_file(args.data_dir, split), columns)


def train(args, callbacks: Sequence[Callable[[runs.TrainState, Any], None]] = ()) -> dict:
    """Run (or resume) the training `args` describe; return a summary (steps, best checkpoints, how it ended).

    `callbacks` are called as `callback(state, model)` after every optimizer step (tests use them to
    interrupt a run at a chosen step).
    """
    dist = _Distributed()
    try:
        return _train(args, callbacks, dist)
    finally:
        dist.close()


def _train(args, callbacks, dist: _Distributed) -> dict:
    run = runs.RunFolder(args.output_dir)
    state, failure = None, None
    if dist.main:
        try:
            state = run.prepare(run_arguments(args), args.resume, args.overwrite)
        except (RagError, OSError) as err:
            failure = err
    if dist.broadcast_flag(failure is not None):
        if failure is not None:
            raise failure
        raise RagError(f"rank 0 could not prepare {run.path!r}")
    if args.resume and state is None:
        state = runs.TrainState.from_dict(runs.read_json(os.path.join(run.last, runs.STATE)))
    resuming = state is not None
    state = state or runs.TrainState()

    torch.manual_seed(args.seed)
    components = resolve_components(args)
    if resuming:
        components.checkpoint = run.last
    with _quiet_transformers():
        model = load_model(components, args.model_type)
    if args.freeze_question_encoder:
        model.rag.question_encoder.requires_grad_(False)
    model.train()
    train_examples = _load_examples(args, "train", args.train_file)
    val_examples = _load_examples(args, "val", args.validation_file)
    if args.max_eval_examples is not None:
        val_examples = val_examples[: args.max_eval_examples]
    model.eval()  # the stored retrievals are those of the encoder without dropout
    cache = cached_training_data(args, components, Predictor(model), train_examples,
                                 lambda path: _load_examples(args, "train", path), progress=args.progress and dist.main)
    model.train()
    num_train = len(cache) if cache is not None else len(train_examples)

    batches_per_epoch = len(batch_indices(num_train, args.train_batch_size, args.seed, 0, dist.rank, dist.world_size))
    if batches_per_epoch == 0:
        raise RagError(f"{num_train} training examples are too few for {dist.world_size} processes")
    accumulation = args.gradient_accumulation_steps
    total = runs.total_steps(args.max_steps, args.num_train_epochs, batches_per_epoch, accumulation)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = _adamw(parameters, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: runs.run_lr_factor(args, step, total))
    if resuming:
        optimizer.load_state_dict(torch.load(os.path.join(run.last, OPTIMIZER), weights_only=True))
        scheduler.load_state_dict(torch.load(os.path.join(run.last, SCHEDULER), weights_only=True))
        rng = torch.load(os.path.join(run.last, RNG_STATE), weights_only=True)
        torch.set_rng_state(rng[f"cpu_{dist.rank}"] if f"cpu_{dist.rank}" in rng else rng["cpu_0"])
    trained = model
    if dist.world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(model)

    writer = _tensorboard(run.file(runs.TENSORBOARD)) if dist.main else None
    loop = _Loop(args, run, dist, components, model, trained, optimizer, scheduler, state, train_examples,
                 val_examples, total, writer, callbacks, cache)
    try:
        return loop.run()
    finally:
        if writer is not None:
            writer.close()


def _adamw(parameters, args):
    """AdamW, fused into one kernel per step where torch has one for the parameters (floating point,
    on CPU or CUDA): the same update as torch's per-parameter loop up to rounding, 3.7 ms instead of
    13 ms a step for a 1.7M-parameter T5 on one CPU core."""
    fused = bool(parameters) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in parameters)
    return torch.optim.AdamW(parameters, lr=args.learning_rate, eps=args.adam_epsilon, weight_decay=args.weight_decay,
                             fused=fused or None)


class _Loop:
    """One training run: steps, logging, validation and checkpoints (see the module docstring)."""

    def __init__(self, args, run, dist, components, model, trained, optimizer, scheduler, state, train_examples,
                 val_examples, total, writer, callbacks, cache=None):
        self.cache = cache  # a CachedRetrieval (--cache_retrieval): stored contexts instead of retrieval per step
        self.num_train = len(cache) if cache is not None else len(train_examples)
        self.args, self.run_folder, self.dist, self.components = args, run, dist, components
        self.model, self.trained, self.optimizer, self.scheduler = model, trained, optimizer, scheduler
        self.state, self.train_examples, self.val_examples = state, train_examples, val_examples
        self.total, self.writer, self.callbacks = total, writer, callbacks
        self.updating = False  # inside optimizer.step(): the weights are half updated
        self.last_eval_step = None
        self.pending_losses = []

    # === Steps ===
    def _batch(self, indices):
        if self.cache is not None:
            return {k: torch.as_tensor(v) for k, v in self.cache.batch(indices).items()}
        examples = [self.train_examples[i] for i in indices]
        batch = encode_batch(self.components.question_tokenizer, self.components.generator_tokenizer, examples,
                             max_source_length=self.args.max_source_length,
                             max_target_length=self.args.max_target_length,
                             decoder_start_token_id=self.components.decoder_start_token_id)
        return {k: torch.as_tensor(v) for k, v in batch.items()}

    def _step(self, group) -> float:
        """One optimizer step over the micro-batches `group` (`MicroBatch`es); returns the mean loss."""
        losses = []
        for i, indices in enumerate(b.indices for b in group):
            sync = i == len(group) - 1 or self.dist.world_size == 1
            context = contextlib.nullcontext() if sync else self.trained.no_sync()
            with context:
                batch = self._batch(indices)
                loss = self.trained(**batch, reduce_loss=False).loss.mean()
                (loss / len(group)).backward()
            losses.append(loss.item())
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.updating = True
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1
        self.state.epoch, self.state.batches_in_epoch = group[-1].next_epoch, group[-1].next_position
        self.updating = False
        return sum(losses) / len(losses)

    def run(self) -> dict:
        from tqdm.auto import tqdm

        args, state, dist = self.args, self.state, self.dist
        accumulation = args.gradient_accumulation_steps
        interrupted = False
        bar = tqdm(total=self.total, initial=state.global_step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not (args.progress and dist.main))
        try:
            with _Interrupt() as interrupt:
                stream = micro_batches(self.num_train, args.train_batch_size, args.seed, state.epoch,
                                       state.batches_in_epoch, dist.rank, dist.world_size)
                while state.global_step < self.total and not state.stopped_early:
                    group = [next(stream) for _ in range(accumulation)]
                    loss = self._step(group)
                    bar.update(1)
                    self._after_step(loss, any(b.ends_epoch for b in group), bar)
                    for callback in self.callbacks:
                        callback(state, self.model)
                    if dist.broadcast_flag(interrupt.requested):
                        raise KeyboardInterrupt
                if self.last_eval_step != state.global_step:
                    self._validate()
                self._save_last()
        except KeyboardInterrupt:
            if self.updating:  # weights half updated: keep the last checkpoint as it is
                raise
            interrupted = True
            self._save_last()
            if dist.main:
                print(f"\ninterrupted at step {state.global_step}: resumable checkpoint in {self.run_folder.last} "
                      "(continue with --resume)", file=sys.stderr)
        finally:
            bar.close()
        return {"global_step": state.global_step, "epoch": state.epoch, "best": list(state.best),
                "stopped_early": state.stopped_early, "interrupted": interrupted, "total_steps": self.total}

    def _after_step(self, loss: float, epoch_done: bool, bar) -> None:
        args, state = self.args, self.state
        self.pending_losses.append(loss)
        step = state.global_step
        if step % args.logging_steps == 0 or step == self.total:
            mean = self.dist.mean(sum(self.pending_losses) / len(self.pending_losses))
            self.pending_losses = []
            lr = args.learning_rate * runs.run_lr_factor(args, step - 1, self.total)
            if self.dist.main:
                self.run_folder.log({"step": step, "epoch": state.epoch, "loss": mean, "learning_rate": lr,
                                     "time": round(time.time(), 3)})
                if self.writer is not None:
                    self.writer.add_scalar("train/loss", mean, step)
                    self.writer.add_scalar("train/learning_rate", lr, step)
                bar.set_postfix(loss=f"{mean:.4f}")
        action = runs.after_step(args, step, epoch_done)
        if action == "validate":
            self._validate()
        if action is not None:
            self._save_last()

    # === Validation and checkpoints ===
    def _validate(self) -> None:
        args, state, run = self.args, self.state, self.run_folder
        self.last_eval_step = state.global_step
        stop = False
        if self.dist.main:
            records = predict_answers(Predictor(self.model), self.components, self.val_examples,
                                      batch_size=args.eval_batch_size, n_docs=args.eval_n_docs,
                                      num_beams=args.num_beams, max_source_length=args.max_source_length,
                                      max_target_length=args.max_target_length)
            result = e2e_metrics(records)
            run.log(runs.eval_record(state.global_step, state.epoch, result))
            if self.writer is not None:
                for key in ("em", "f1"):
                    self.writer.add_scalar(f"eval/{key}", result[key], state.global_step)
            run.write_predictions(records)
            stop = state.record_eval(result["em"], args.early_stopping_patience)
            path = run.step_checkpoint(state.global_step)
            keep, dropped = state.keep_best(state.global_step, result["em"], path, args.save_total_limit)
            if keep:
                run.save_checkpoint(path, self._write_model, state)
            for old in dropped:
                run.remove(old)
            run.write_state(state)
        state.stopped_early = self.dist.broadcast_flag(stop)

    def _write_model(self, folder: str) -> None:
        with _quiet_transformers():
            self.model.save_pretrained(folder)
        self.components.tokenizer.save_pretrained(folder)

    def _write_resumable(self, folder: str, rng: dict) -> None:
        self._write_model(folder)
        torch.save(self.optimizer.state_dict(), os.path.join(folder, OPTIMIZER))
        torch.save(self.scheduler.state_dict(), os.path.join(folder, SCHEDULER))
        torch.save(rng, os.path.join(folder, RNG_STATE))

    def _rng_states(self) -> dict:
        state = torch.get_rng_state()
        if self.dist.world_size == 1:
            return {"cpu_0": state}
        gathered = [torch.empty_like(state) for _ in range(self.dist.world_size)]
        torch.distributed.all_gather(gathered, state)
        return {f"cpu_{rank}": s for rank, s in enumerate(gathered)}

    def _save_last(self) -> None:
        rng = self._rng_states()  # every process takes part in the gather
        if self.dist.main:
            self.run_folder.save_checkpoint(self.run_folder.last, lambda folder: self._write_resumable(folder, rng),
                                            self.state)
            self.run_folder.write_state(self.state)
        self.dist.barrier()


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_finetune_args(argv, PROG)
    try:
        summary = train(args)
    except (RagError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    best = summary["best"][0] if summary["best"] else None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {summary['global_step']} steps; best validation EM "
              f"{best['em']:.4f} at {best['path']}" if best else f"trained {summary['global_step']} steps")
    return 130 if summary["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())

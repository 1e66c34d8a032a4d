"""`python -m rag_tf.finetune`: fine-tune a TensorFlow RAG model on question/answer pairs with Keras `fit`.

    python -m rag_tf.finetune --model_name_or_path rag_checkpoint --index_path kb_index \\
        --data_dir data --output_dir run --max_steps 1000 --eval_steps 100 --learning_rate 3e-5

Options, data files, the run folder and validation are shared with `python -m rag_pt.finetune`
(`rag_core.training`): the same flags, the same batches in the same order, the same learning-rate
schedule, the same checkpoints. Training is Keras 3 `fit` on the model's own `train_step` (graph
mode, retrieval inside the step); what the run adds is a Keras callback that sets the learning
rate, logs, validates by exact match, keeps the best checkpoints and stops early.

- Batches are padded to `--max_source_length` / `--max_target_length`: fixed shapes, one graph trace.
  With `--cache_retrieval` (stored passages, `rag_core.training.cached`), each batch is padded to its
  own longest context; the dataset's widths are `None`, so one trace serves those too.
- `--gradient_accumulation_steps` is Keras' own (`gradient_accumulation_steps` of the optimizer);
  `--max_grad_norm` its `global_clipnorm`.
- Checkpoints: `checkpoints/step-N/` (the best by validation EM) and `checkpoints/last/` (resumable:
  plus `optimizer.safetensors` and `model_state.safetensors`, the optimizer's and the model's
  non-trainable variables, dropout seeds included), each a model folder (`model.safetensors` under
  transformers' PyTorch names, config, tokenizers) that both frameworks load.
- Logs: `metrics.jsonl` (JSON lines), TensorBoard event files (Keras' TensorBoard callback, plus
  validation scalars under `tensorboard/eval`), Keras' progress bar.
- Ctrl-C: the first one ends `fit` after the current batch, writes `checkpoints/last/` and exits
  (status 130); `--resume` continues from there.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from rag_core.errors import RagError
from rag_core.training import run as runs
from rag_core.training.cached import cached_training_data
from rag_core.training.cli import parse_finetune_args, run_arguments
from rag_core.training.components import resolve_components
from rag_core.training.data import Columns, batch_indices, encode_batch, micro_batches, read_examples, split_file
from rag_core.training.evaluation import e2e_metrics, predict_answers

from .evaluate import Predictor, load_model

PROG = "python -m rag_tf.finetune"
OPTIMIZER, MODEL_STATE = "optimizer.safetensors", "model_state.safetensors"


class _Interrupt:
    """The first Ctrl-C asks `fit` to stop after the current batch; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _load_examples(args, split: str, path: Optional[str]):
    columns = Columns(args.question_column, args.answers_column, args.titles_column, args.answer_separator)
    return read_examples(path if path is not None else split_file(args.data_dir, split), columns)


def _save_variables(path: str, variables) -> None:
    from safetensors.numpy import save_file

    tensors = {f"{i:05d}": np.ascontiguousarray(np.asarray(v)) for i, v in enumerate(variables)}
    save_file(tensors, path, metadata={"paths": "\n".join(v.path for v in variables)})


def _restore_variables(path: str, variables, what: str) -> None:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        keys = sorted(f.keys())
        if len(keys) != len(variables):
            raise RagError(f"{path!r} holds {len(keys)} {what} variables, the model has {len(variables)}: "
                           "was the run started with other settings?")
        values = [f.get_tensor(key) for key in keys]
    for i, (variable, value) in enumerate(zip(variables, values)):
        if value.size == int(np.prod(variable.shape)):
            values[i] = value = value.reshape(tuple(variable.shape))  # safetensors stores scalars as (1,)
        if tuple(variable.shape) != value.shape:
            raise RagError(f"{path!r}: {what} variable {variable.path} has shape {tuple(variable.shape)}, "
                           f"the checkpoint {value.shape}")
    for variable, value in zip(variables, values):
        variable.assign(value)


def _batches_applied(optimizer) -> int:
    """Batches the optimizer has taken. With gradient accumulation, Keras' public `iterations` counts
    updates (batches // steps); the batch counter underneath is `_iterations`."""
    return int(np.asarray(getattr(optimizer, "_iterations", optimizer.iterations)))


def train(args, callbacks: Sequence[Callable[[runs.TrainState, Any], None]] = ()) -> dict:
    """Run (or resume) the training `args` describe; return a summary (steps, best checkpoints, how it ended).

    `callbacks` are called as `callback(state, model)` after every optimizer step.
    """
    run = runs.RunFolder(args.output_dir)
    state = run.prepare(run_arguments(args), args.resume, args.overwrite)
    resuming = state is not None
    state = state or runs.TrainState()

    keras.utils.set_random_seed(args.seed)
    components = resolve_components(args)
    if resuming:
        components.checkpoint = run.last
    model = load_model(components, args.model_type)
    if args.freeze_question_encoder:
        model.rag.question_encoder.trainable = False
    train_examples = _load_examples(args, "train", args.train_file)
    val_examples = _load_examples(args, "val", args.validation_file)
    if args.max_eval_examples is not None:
        val_examples = val_examples[: args.max_eval_examples]
    cache = cached_training_data(args, components, Predictor(model), train_examples,
                                 lambda path: _load_examples(args, "train", path), progress=args.progress)
    num_train = len(cache) if cache is not None else len(train_examples)
    batches_per_epoch = len(batch_indices(num_train, args.train_batch_size, args.seed, 0))
    accumulation = args.gradient_accumulation_steps
    total = runs.total_steps(args.max_steps, args.num_train_epochs, batches_per_epoch, accumulation)

    optimizer = keras.optimizers.AdamW(
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, epsilon=args.adam_epsilon,
        global_clipnorm=args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None)
    model.compile(optimizer=optimizer)
    # every variable before `fit` traces its step: a variable created while tracing makes
    # TensorFlow trace the whole step a second time
    optimizer.build(model.trainable_variables)
    model._rag_loss_metric()
    if resuming:
        _restore_variables(os.path.join(run.last, OPTIMIZER), optimizer.variables, "optimizer")
        _restore_variables(os.path.join(run.last, MODEL_STATE), model.non_trainable_variables, "model state")

    dataset = _dataset(args, components, train_examples, state) if cache is None else _cached_dataset(args, cache, state)
    loop = _Loop(args, run, components, model, state, num_train, val_examples, total, callbacks)
    board = keras.callbacks.TensorBoard(run.file(runs.TENSORBOARD), update_freq=args.logging_steps)
    remaining = (total - state.global_step) * accumulation
    interrupted = False
    with _Interrupt() as interrupt:
        loop.interrupt = interrupt
        try:
            if remaining > 0:
                model.fit(dataset, epochs=1, steps_per_epoch=remaining, callbacks=[loop, board], shuffle=False,
                          verbose=1 if args.progress else 0)
            interrupted = interrupt.requested
        except KeyboardInterrupt:
            if not loop.consistent():  # stopped inside a batch: the last checkpoint stays as it is
                raise
            interrupted = True
    if interrupted:
        loop.save_last()
        print(f"\ninterrupted at step {state.global_step}: resumable checkpoint in {run.last} "
              "(continue with --resume)", file=sys.stderr)
    else:
        if loop.last_eval_step != state.global_step:
            loop.validate()
        loop.save_last()
    loop.close()
    return {"global_step": state.global_step, "epoch": state.epoch, "best": list(state.best),
            "stopped_early": state.stopped_early, "interrupted": interrupted, "total_steps": total}


def _dataset(args, components, examples, state: runs.TrainState) -> tf.data.Dataset:
    """The training stream from where `state` stands, padded to fixed lengths (int32, as Keras feeds)."""
    source, target = args.max_source_length, args.max_target_length

    def generate():
        for batch in micro_batches(len(examples), args.train_batch_size, args.seed, state.epoch,
                                   state.batches_in_epoch):
            encoded = encode_batch(components.question_tokenizer, components.generator_tokenizer,
                                   [examples[i] for i in batch.indices], max_source_length=source,
                                   max_target_length=target, decoder_start_token_id=components.decoder_start_token_id,
                                   pad_to_max=True)
            yield {k: v.astype(np.int32) for k, v in encoded.items()}

    spec = {"input_ids": tf.TensorSpec([None, source], tf.int32),
            "attention_mask": tf.TensorSpec([None, source], tf.int32),
            "labels": tf.TensorSpec([None, target], tf.int32)}
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


def _cached_dataset(args, cache, state: runs.TrainState) -> tf.data.Dataset:
    """The training stream of stored retrievals (`--cache_retrieval`), each batch padded to its own longest
    row: the widths are `None` in the dataset's signature, so one graph trace serves every batch."""

    def generate():
        for batch in micro_batches(len(cache), args.train_batch_size, args.seed, state.epoch, state.batches_in_epoch):
            encoded = cache.batch(batch.indices)
            yield {k: v if k == "doc_scores" else v.astype(np.int32) for k, v in encoded.items()}

    spec = {"context_input_ids": tf.TensorSpec([None, None], tf.int32),
            "context_attention_mask": tf.TensorSpec([None, None], tf.int32),
            "doc_scores": tf.TensorSpec([None, cache.n_docs], tf.float32),
            "labels": tf.TensorSpec([None, None], tf.int32)}
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


class _Loop(keras.callbacks.Callback):
    """Learning rate, logs, validation, best-k checkpoints and early stopping around Keras `fit`."""

    def __init__(self, args, run, components, model, state, num_train, val_examples, total, callbacks):
        super().__init__()
        self.args, self.run_folder, self.components, self.rag_model = args, run, components, model
        self.state, self.val_examples, self.total, self.callbacks = state, val_examples, total, callbacks
        # the batches `fit` consumes, followed in step (the dataset itself runs ahead, prefetching)
        self.stream = micro_batches(num_train, args.train_batch_size, args.seed, state.epoch,
                                    state.batches_in_epoch)
        self.accumulation = args.gradient_accumulation_steps
        self.micro_done = 0  # batches of this `fit` whose update is complete
        self.start_iterations = None
        self.step_losses, self.pending_losses, self.epoch_ended = [], [], False
        self.last_eval_step = None
        self.interrupt = None
        self.writer = tf.summary.create_file_writer(os.path.join(run.file(runs.TENSORBOARD), "eval"))

    def close(self) -> None:
        self.writer.close()

    def consistent(self) -> bool:
        """Whether the optimizer has applied exactly the batches counted (no batch half done)."""
        if self.start_iterations is None:
            return True
        return _batches_applied(self.rag_model.optimizer) - self.start_iterations == self.micro_done

    def on_train_begin(self, logs=None):
        self.start_iterations = _batches_applied(self.rag_model.optimizer)

    def on_train_batch_begin(self, batch, logs=None):
        model = self.rag_model
        step = self.state.global_step
        model.optimizer.learning_rate = self.args.learning_rate * runs.run_lr_factor(self.args, step, self.total)
        for metric in model.metrics:  # Keras' loss is a running mean: reset it to read each batch's loss
            metric.reset_state()

    def on_train_batch_end(self, batch, logs=None):
        self.micro_done += 1
        position = next(self.stream)
        self.step_losses.append(float(np.asarray(logs["loss"])))
        self.epoch_ended = self.epoch_ended or position.ends_epoch
        state = self.state
        state.epoch, state.batches_in_epoch = position.next_epoch, position.next_position
        if self.micro_done % self.accumulation:
            return
        state.global_step += 1
        loss = sum(self.step_losses) / len(self.step_losses)
        epoch_done, self.step_losses, self.epoch_ended = self.epoch_ended, [], False
        self._after_step(loss, epoch_done)
        for callback in self.callbacks:
            callback(state, self.rag_model)
        if state.stopped_early or (self.interrupt is not None and self.interrupt.requested) \
                or state.global_step >= self.total:
            self.rag_model.stop_training = True

    def _after_step(self, loss: float, epoch_done: bool) -> None:
        args, state = self.args, self.state
        step = state.global_step
        self.pending_losses.append(loss)
        if step % args.logging_steps == 0 or step == self.total:
            mean = sum(self.pending_losses) / len(self.pending_losses)
            self.pending_losses = []
            lr = args.learning_rate * runs.run_lr_factor(args, step - 1, self.total)
            self.run_folder.log({"step": step, "epoch": state.epoch, "loss": mean, "learning_rate": lr,
                                 "time": round(time.time(), 3)})
        action = runs.after_step(args, step, epoch_done)
        if action == "validate":
            self.validate()
        if action is not None:
            self.save_last()

    # === Validation and checkpoints ===
    def validate(self) -> None:
        args, state, run = self.args, self.state, self.run_folder
        self.last_eval_step = state.global_step
        records = predict_answers(Predictor(self.rag_model), self.components, self.val_examples,
                                  batch_size=args.eval_batch_size, n_docs=args.eval_n_docs, num_beams=args.num_beams,
                                  max_source_length=args.max_source_length, max_target_length=args.max_target_length)
        result = e2e_metrics(records)
        run.log(runs.eval_record(state.global_step, state.epoch, result))
        with self.writer.as_default():
            for key in ("em", "f1"):
                tf.summary.scalar(f"eval/{key}", result[key], step=state.global_step)
        self.writer.flush()
        run.write_predictions(records)
        state.record_eval(result["em"], args.early_stopping_patience)
        path = run.step_checkpoint(state.global_step)
        keep, dropped = state.keep_best(state.global_step, result["em"], path, args.save_total_limit)
        if keep:
            run.save_checkpoint(path, self._write_model, state)
        for old in dropped:
            run.remove(old)
        run.write_state(state)
        if state.stopped_early:
            self.rag_model.stop_training = True

    def _write_model(self, folder: str) -> None:
        self.rag_model.save_pretrained(folder)
        self.components.tokenizer.save_pretrained(folder)

    def _write_resumable(self, folder: str) -> None:
        self._write_model(folder)
        model = self.rag_model
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        _save_variables(os.path.join(folder, OPTIMIZER), model.optimizer.variables)
        _save_variables(os.path.join(folder, MODEL_STATE), model.non_trainable_variables)

    def save_last(self) -> None:
        self.run_folder.save_checkpoint(self.run_folder.last, self._write_resumable, self.state)
        self.run_folder.write_state(self.state)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_finetune_args(argv, PROG)
    try:
        summary = train(args)
    except (RagError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    best = summary["best"][0] if summary["best"] else None
    print(f"trained {summary['global_step']} steps; best validation EM {best['em']:.4f} at {best['path']}"
          if best else f"trained {summary['global_step']} steps")
    return 130 if summary["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())

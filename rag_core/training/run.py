"""The run folder of a fine-tuning run and the bookkeeping both frameworks share. No tensors.

Layout:

    <output_dir>/config.json          the run's arguments (what `--resume` checks against)
    <output_dir>/metrics.jsonl        one JSON object per line: training logs and validation results
    <output_dir>/predictions.jsonl    the latest validation predictions (question, answer, golds, passages)
    <output_dir>/trainer_state.json   step, epoch, the kept checkpoints and their validation EM
    <output_dir>/tensorboard/         TensorBoard event files
    <output_dir>/checkpoints/last/    the resumable checkpoint: model, tokenizers, optimizer, scheduler, RNG
    <output_dir>/checkpoints/step-N/  the best checkpoints by validation EM (`--save_total_limit`)

Every checkpoint folder is a complete model folder (`config.json`, `model.safetensors`, the
tokenizers): `--model_name_or_path` of the evaluate commands and `from_pretrained` read it. Files
are written atomically, so a crash or Ctrl-C never leaves a half-written checkpoint or state file.

A folder that already holds a run is refused unless `--resume` (continue from `checkpoints/last`)
or `--overwrite` (remove the earlier run's files; nothing else in the folder is touched).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Any, Optional

from ..errors import OutputExistsError, ResumeError
from ..storage import atomic_directory, atomic_file

CONFIG = "config.json"
METRICS = "metrics.jsonl"
PREDICTIONS = "predictions.jsonl"
STATE = "trainer_state.json"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
LAST = "last"
RUN_FILES = (CONFIG, METRICS, PREDICTIONS, STATE, TENSORBOARD, CHECKPOINTS)

# Arguments that may change when a run is resumed: where and how long it runs, how often it reports.
RESUMABLE_CHANGES = frozenset({
    "resume", "overwrite", "max_steps", "num_train_epochs", "eval_steps", "save_steps", "logging_steps",
    "early_stopping_patience", "save_total_limit", "progress", "eval_batch_size", "max_eval_examples",
    "retrieval_cache_dir",
})


def write_json(path: str, value: Any) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str, records) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


@dataclasses.dataclass
class TrainState:
    """Where training stands: optimizer steps done, epoch and batches consumed in it, kept checkpoints.

    `best` lists the kept best checkpoints as `{"step", "em", "path"}`, best first; `bad_evals`
    counts validations since EM last improved (early stopping).
    """

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best: list = dataclasses.field(default_factory=list)
    best_em: Optional[float] = None
    bad_evals: int = 0
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def record_eval(self, em: float, patience: Optional[int]) -> bool:
        """Early stopping on validation EM; True when training should stop."""
        if self.best_em is None or em > self.best_em:
            self.best_em, self.bad_evals = em, 0
        else:
            self.bad_evals += 1
        if patience is not None and patience > 0 and self.bad_evals >= patience:
            self.stopped_early = True
        return self.stopped_early

    def keep_best(self, step: int, em: float, path: str, limit: int) -> tuple[bool, list[str]]:
        """Whether the checkpoint of `step` is among the `limit` best by EM (earlier wins ties), and
        the paths of checkpoints that drop out of the best `limit`."""
        entries = [e for e in self.best if e["step"] != step] + [{"step": step, "em": float(em), "path": path}]
        entries.sort(key=lambda e: (-e["em"], e["step"]))
        kept, dropped = entries[:limit], entries[limit:]
        self.best = kept
        return any(e["step"] == step for e in kept), [e["path"] for e in dropped if e["step"] != step]


def lr_factor(step: int, warmup_steps: int, total_steps: int, scheduler: str, decay_start: float = 0.0,
              min_ratio: float = 0.0) -> float:
    """The learning rate multiplier at optimizer step `step` (0-based): linear warmup over
    `warmup_steps`, then constant, or linear decay to `min_ratio` at `total_steps` (transformers'
    schedules with the defaults). The decay starts after the warm-up, or at `decay_start` x
    `total_steps` when that is later (the rate stays constant in between)."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if scheduler == "constant":
        return 1.0
    start = max(warmup_steps, decay_start * total_steps)
    if step <= start:
        return 1.0
    left = max(0.0, (total_steps - step) / max(1.0, total_steps - start))
    return min_ratio + (1.0 - min_ratio) * left


def run_lr_factor(args, step: int, total_steps: int) -> float:
    """`lr_factor` with a run's scheduler options."""
    return lr_factor(step, args.warmup_steps, total_steps, args.lr_scheduler,
                     getattr(args, "lr_decay_start", 0.0), getattr(args, "min_lr_ratio", 0.0))


def total_steps(max_steps: int, num_train_epochs: float, batches_per_epoch: int, accumulation: int) -> int:
    """Optimizer steps of the run: `max_steps` when > 0, else epochs x optimizer steps per epoch."""
    if max_steps and max_steps > 0:
        return max_steps
    return max(1, math.ceil(num_train_epochs * math.ceil(batches_per_epoch / accumulation)))


class RunFolder:
    """The files of one run (see the module docstring)."""

    def __init__(self, output_dir: str):
        self.path = os.path.abspath(os.fspath(output_dir))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpoints(self) -> str:
        return self.file(CHECKPOINTS)

    @property
    def last(self) -> str:
        return os.path.join(self.checkpoints, LAST)

    def step_checkpoint(self, step: int) -> str:
        return os.path.join(self.checkpoints, f"step-{step:06d}")

    def holds_run(self) -> bool:
        return any(os.path.lexists(self.file(name)) for name in RUN_FILES)

    def prepare(self, args: dict, resume: bool, overwrite: bool) -> Optional[TrainState]:
        """Check and set up the folder; return the state to resume from (None for a fresh run).

        Refuses a folder that holds a run unless `resume` or `overwrite`; with `resume`, refuses
        when there is no resumable checkpoint or when a training setting other than
        `RESUMABLE_CHANGES` differs from the saved `config.json` (the run would not be the same run).
        """
        if resume and overwrite:
            raise ResumeError("--resume and --overwrite exclude each other")
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise OutputExistsError(f"output_dir {self.path!r} exists and is a file")
        if resume:
            return self._resume_state(args)
        if self.holds_run():
            if not overwrite:
                raise OutputExistsError(
                    f"{self.path!r} already holds a run ({CONFIG}, {CHECKPOINTS}/ ...): pass --resume to continue it, "
                    "--overwrite to replace it, or choose another --output_dir"
                )
            for name in RUN_FILES:
                target = self.file(name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                elif os.path.lexists(target):
                    os.remove(target)
        os.makedirs(self.checkpoints, exist_ok=True)
        write_json(self.file(CONFIG), args)
        return None

    def _resume_state(self, args: dict) -> TrainState:
        if not os.path.isfile(os.path.join(self.last, STATE)):
            raise ResumeError(f"--resume: {self.path!r} holds no resumable checkpoint ({CHECKPOINTS}/{LAST}/{STATE})")
        saved = read_json(self.file(CONFIG)) if os.path.isfile(self.file(CONFIG)) else {}
        changed = sorted(k for k in set(saved) | set(args)
                         if k not in RESUMABLE_CHANGES and saved.get(k) != args.get(k))
        if changed:
            details = ", ".join(f"--{k} {saved.get(k)!r} -> {args.get(k)!r}" for k in changed)
            raise ResumeError(f"--resume: these settings differ from the run in {self.path!r}: {details}; "
                              "resume with the same settings, or start a new run")
        write_json(self.file(CONFIG), args)
        return TrainState.from_dict(read_json(os.path.join(self.last, STATE)))

    def log(self, record: dict) -> None:
        """Append one JSON line to `metrics.jsonl` (flushed: readable while training runs)."""
        with open(self.file(METRICS), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def write_state(self, state: TrainState) -> None:
        write_json(self.file(STATE), state.to_dict())

    def write_predictions(self, records) -> None:
        write_jsonl(self.file(PREDICTIONS), records)

    def save_checkpoint(self, path: str, write, state: TrainState) -> None:
        """Write a checkpoint atomically: `write(tmp_folder)` fills it, the state goes in last."""
        with atomic_directory(path, overwrite=True) as tmp:
            write(tmp)
            write_json(os.path.join(tmp, STATE), state.to_dict())

    def remove(self, path: str) -> None:
        path = os.path.abspath(path)
        if os.path.dirname(path) == self.checkpoints and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def after_step(args, step: int, epoch_done: bool) -> Optional[str]:
    """What a run does after optimizer step `step`: "validate" (then save `last`), "save" or None.

    Validation every `--eval_steps`, or at the end of every epoch without it; `--save_steps` saves
    `last` in between."""
    if (args.eval_steps is not None and step % args.eval_steps == 0) or (args.eval_steps is None and epoch_done):
        return "validate"
    if args.save_steps is not None and step % args.save_steps == 0:
        return "save"
    return None


def eval_record(step: int, epoch: int, metrics: dict) -> dict:
    return {"step": step, "epoch": epoch, **{f"eval_{k}": v for k, v in metrics.items()}}

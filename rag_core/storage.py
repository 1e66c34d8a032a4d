"""Files on disk: every write is atomic, every unusable file read raises an error that names it.

Writing (every writer of the library goes through one of these three):

- `atomic_save(folder)`: a checkpoint folder that other saves share. Models, tokenizers, retrievers
  and configs are commonly saved into one folder (`model.save_pretrained(d)`,
  `tokenizer.save_pretrained(d)`, `retriever.save_pretrained(d)`), so a save replaces only the
  entries it writes and keeps every other file. It works in three steps:

  1. everything is written into a temporary sibling folder (`.<name>.<random>.partial`, on the same
     filesystem, so moving a file into place is a rename); the target is not touched;
  2. the new entries are moved into the target one by one: a file with `os.replace` (a reader sees
     the old or the new file, never a missing or half-written one; the old file is kept as a hard
     link in a second sibling, `.<name>.<random>.old`), a folder (a tokenizer's subfolder) whole,
     after moving the old one aside; configuration files (`*.json`) move last;
  3. stale files of the same kind are removed, last, once the new ones are in place: a save that
     writes model weights removes the older weight files it did not write (old shards
     `model-00001-of-00003.safetensors` and their `model.safetensors.index.json` when the new save is
     one `model.safetensors`, and the reverse), in every format: loaders choose a format by
     preference (`model.safetensors` before `tf_model.h5` or `pytorch_model.bin`), so an older file
     left in another format could be loaded instead of the new weights. A folder thus holds one
     version of the model's weights. Weights of another variant (`model.fp16.safetensors`) and
     every file that is not model weights (tokenizers, a retriever's index, your notes) are kept.

  A failure at any point (an exception inside the write, e.g. a full disk, or a failing rename)
  leaves the previous files byte-identical: step 1 never touches the target, and steps 2-3 keep a
  journal that is rolled back. Both siblings are removed in every case; only when the rollback itself
  fails is the `.old` sibling kept, and the exception says where it is. A new target folder appears
  whole (one rename). Concurrent readers may see some new files beside old ones while step 2 runs
  (a few renames); the folder is never missing a file and never holds a partial one.

- `atomic_directory(path, overwrite)`: a folder that belongs to one writer alone (a converter
  output, a built index): written into a temporary sibling, then renamed into place; an existing
  folder is refused unless `overwrite=True`, and is then moved aside and deleted only after the
  new one is in place.

- `atomic_file(path)`: one file, written under a temporary name beside it and renamed over it.

Created folders and files respect the umask (`tempfile.mkdtemp`'s 0o700 never survives), and a
target that is an existing file where a folder is expected raises `NotAFolderError` naming it.

Reading: `check_rag_config` (a checkpoint folder's `config.json`), `check_safetensors` (a
`.safetensors` file's header against its size), `read_weight_index` (a sharded checkpoint's
`*.index.json` and its shards) and `check_weight_files` (all of a folder's weights) raise
`CheckpointError` / `CheckpointNotFoundError` naming the file, what was expected and what was found,
before a storage library fails with a message that does not name it.

Standard library only: `rag_core` imports neither framework, and this module not even numpy.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import uuid
from typing import Any, Iterator, Optional

from .errors import CheckpointError, CheckpointNotFoundError, NotAFolderError, OutputExistsError

CONFIG_NAME = "config.json"
# the weight files of transformers' layouts, in every framework's format: `model.safetensors`,
# `tf_model.h5`, `pytorch_model.bin`, `flax_model.msgpack`, their shards (`model-00001-of-00003.safetensors`)
# and shard indexes (`model.safetensors.index.json`), each optionally of a variant (`model.fp16.safetensors`)
_WEIGHTS = re.compile(r"(?:model|tf_model|pytorch_model|flax_model)(?:\.(?P<variant>[^.]+?))?(?:-\d{5}-of-\d{5})?"
                      r"\.(?:safetensors|h5|bin|msgpack)(?:\.index\.json)?")


# === Writing ===
def check_save_directory(path) -> str:
    """`path` as an absolute string; `NotAFolderError` when it is an existing file (or a link to one)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotAFolderError(f"{path} is a file, not a folder: a checkpoint is saved into (and loaded from) a folder; "
                              "choose a folder path")
    return path


def check_output(path, overwrite: bool) -> None:
    """Refuse an existing `path` unless `overwrite` (and a file always: the output is a folder)."""
    path = check_save_directory(path)
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path!r} already exists; choose another output or pass overwrite=True (--overwrite)")


@contextlib.contextmanager
def atomic_save(save_directory) -> Iterator[str]:
    """Yield an empty temporary folder; on success its entries replace those of `save_directory` (see
    the module docstring: other files are kept, stale shards of the written weights removed); on any
    error the folder is left as it was."""
    target = check_save_directory(save_directory)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = _sibling(target, "partial")
    try:
        yield staging
        _commit(staging, target)
    finally:
        _remove(staging)


@contextlib.contextmanager
def atomic_directory(path, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary folder; on success it becomes `path` (replacing an existing folder only with
    `overwrite=True`), on any error (or Ctrl-C) it is removed and `path` is left as it was."""
    path = os.path.abspath(os.fspath(path))
    check_output(path, overwrite)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _sibling(path, "partial")
    try:
        yield tmp
        check_output(path, overwrite)  # someone may have created it meanwhile
        if os.path.lexists(path):
            backup = _sibling(path, "old", create=False)
            os.rename(path, backup)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(backup, path)  # put the old one back
                raise
            _remove(backup)
        else:
            os.rename(tmp, path)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_file(path) -> Iterator[str]:
    """Yield a temporary file name beside `path`; on success it replaces `path` in one rename."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; a file was expected there")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _temporary_name(path, "partial")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 & ~umask, unlike mkstemp's 0o600
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _temporary_name(path: str, kind: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.{kind}")


def _sibling(path: str, kind: str, create: bool = True) -> str:
    """A fresh name beside `path` (same filesystem: renames between them are atomic); created as a
    folder with `os.mkdir`, whose mode is 0o777 & ~umask (mkdtemp's 0o700 would survive a rename)."""
    while True:
        name = _temporary_name(path, kind)
        if not create:
            if not os.path.lexists(name):
                return name
            continue
        try:
            os.mkdir(name, 0o777)
            return name
        except FileExistsError:
            continue


def _commit_order(name: str) -> tuple:
    # weights and folders first, configuration files last (config.json the very last): a reader that
    # finds the new config.json finds the new weights
    return (name == CONFIG_NAME, name.endswith(".json"), name)


def weights_variant(name: str) -> Optional[str]:
    """The variant of a weights file name ("" for the default, "fp16" for `model.fp16.safetensors`), in
    any format, sharded or not; None for a file that is not model weights."""
    match = _WEIGHTS.fullmatch(name)
    return (match["variant"] or "") if match else None


def stale_weight_files(existing, written) -> list[str]:
    """The names among `existing` that are model weights of a variant `written` holds, but were not
    written again: in any format, since loaders pick a format by preference and an older file in a
    preferred format (`model.safetensors` beside a new `tf_model.h5`) would shadow the new weights."""
    variants = {weights_variant(n) for n in written} - {None}
    return sorted(n for n in existing if n not in set(written) and weights_variant(n) in variants)


def _commit(staging: str, target: str) -> None:
    names = sorted(os.listdir(staging), key=_commit_order)
    if not names:
        return  # a save that wrote nothing changes nothing
    if not os.path.lexists(target):
        try:
            os.rename(staging, target)  # a new folder appears whole
            return
        except OSError:
            if not os.path.isdir(target):  # not a folder created meanwhile by someone else: a real failure
                raise
    check_save_directory(target)
    stale = [n for n in stale_weight_files(os.listdir(target), names) if os.path.isfile(os.path.join(target, n))]
    backup = _sibling(target, "old")
    journal: list[tuple[str, str, bool]] = []  # (action, name, an old entry was set aside)
    try:
        for name in names:
            new, old, kept = (os.path.join(staging, name), os.path.join(target, name), os.path.join(backup, name))
            had_old = os.path.lexists(old)
            if had_old and os.path.isfile(old) and not os.path.islink(old) and os.path.isfile(new):
                try:
                    os.link(old, kept)  # keep the old bytes, then swap in one rename
                except OSError:  # a filesystem without hard links
                    os.rename(old, kept)
            elif had_old:
                os.rename(old, kept)  # a folder (or a link) is moved aside whole
            journal.append(("placed", name, had_old))
            os.replace(new, old)
        for name in stale:
            journal.append(("removed", name, True))
            os.rename(os.path.join(target, name), os.path.join(backup, name))
    except BaseException as err:
        try:
            _roll_back(journal, staging, target, backup)
        except BaseException as failed:
            err.add_note(f"restoring the previous files failed ({type(failed).__name__}: {failed}); "
                         f"they are kept in {backup}")
            raise err from None
        _remove(backup)
        raise
    _remove(backup)


def _roll_back(journal, staging: str, target: str, backup: str) -> None:
    """Undo `_commit`'s steps, last first; each step was journalled before it ran, so it may be half done."""
    for action, name, had_old in reversed(journal):
        current, kept = os.path.join(target, name), os.path.join(backup, name)
        if action == "placed":
            if had_old and os.path.isfile(kept) and os.path.isfile(current) and not os.path.islink(current):
                os.replace(kept, current)  # the old file back over the new one (or over itself) in one rename
                continue
            if os.path.lexists(current) and not (had_old and not os.path.lexists(kept)):
                os.rename(current, os.path.join(staging, name))  # the new entry out; its staging name is free
        if had_old and os.path.lexists(kept):
            os.rename(kept, current)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


# === Reading ===
def _found(path: str) -> str:
    """What is at `path`, for error messages."""
    if not os.path.lexists(path):
        return "nothing"
    if os.path.isdir(path):
        entries = sorted(os.listdir(path))
        return f"{entries[:12]}{' ...' if len(entries) > 12 else ''}" if entries else "an empty folder"
    return f"a file of {os.path.getsize(path)} bytes"


def read_json(path, what: str) -> Any:
    """The JSON in `path`; `CheckpointError` naming the file when it is not valid JSON."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); expected {what}; found {_found(path)} "
                              "(truncated or edited by hand?)") from err


def check_rag_config(path, subfolder: Optional[str] = None) -> dict:
    """The `config.json` of the local RAG checkpoint folder `path` (or the file itself), checked: it
    exists, is a JSON object, says `model_type: rag` and holds the two sub-configurations.

    Raises `NotAFolderError`/`CheckpointNotFoundError`/`CheckpointError` that name the folder or
    file, say what a RAG checkpoint holds and what was found there.
    """
    path = os.fspath(path)
    if subfolder:
        path = os.path.join(path, subfolder)
    if os.path.isdir(path):
        folder, file = path, os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(file):
            raise CheckpointNotFoundError(
                f"{folder} has no {CONFIG_NAME}: not a checkpoint folder. A RAG checkpoint folder holds {CONFIG_NAME} "
                "(model_type 'rag', with question_encoder and generator sub-configurations) and, for a model, its "
                f"weights (model.safetensors or tf_model.h5); found {_found(folder)}")
    elif os.path.isfile(path):
        folder, file = os.path.dirname(path), path
    else:
        raise CheckpointNotFoundError(f"{path} does not exist: expected a RAG checkpoint folder")
    config = read_json(file, f"a RAG {CONFIG_NAME}")
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} holds a JSON {type(config).__name__}; expected a JSON object (a RAG config)")
    model_type = config.get("model_type")
    subs = [k for k in ("question_encoder", "generator") if isinstance(config.get(k), dict)]
    if model_type not in (None, "rag") or (model_type is None and len(subs) < 2):
        found = f"describes a {model_type!r} model" if model_type is not None else f"has no model_type (keys {sorted(config)[:12]})"
        raise CheckpointError(
            f"{file} {found}; a RAG checkpoint has model_type 'rag', with question_encoder and generator "
            "sub-configurations. For separate question encoder and generator checkpoints, use "
            "from_pretrained_question_encoder_generator(question_encoder_path, generator_path)")
    missing = [k for k in ("question_encoder", "generator") if k not in subs]
    if missing:
        raise CheckpointError(f"{file} has model_type 'rag' but no {' and no '.join(missing)} sub-configuration "
                              f"(an object with its own model_type); found keys {sorted(config)}")
    return config


def check_safetensors(path) -> None:
    """Check a `.safetensors` file against its own header (8-byte length, JSON header, tensor byte
    ranges): `CheckpointError` naming the file when it is truncated or not safetensors at all.
    Reads only the header."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is {size} bytes; a safetensors file starts with an 8-byte header length "
                                  "(truncated or empty file?)")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise CheckpointError(f"{path} is {size} bytes but its header says the header alone is {length} bytes: "
                                  "truncated, or not a safetensors file")
        raw = f.read(length)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{path}: the safetensors header is not valid ({type(err).__name__}: {err}): "
                              "a corrupt file, or not a safetensors file") from err
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        raise CheckpointError(f"{path} is {size} bytes; its header describes {len(ends)} tensors that need "
                              f"{expected} bytes: {'truncated' if size < expected else 'trailing bytes'} "
                              "(an interrupted copy or download?)")


def read_weight_index(path) -> list[str]:
    """The shard files a sharded checkpoint's `*.index.json` lists (sorted, each once), after checking
    that the index is valid and that every shard exists beside it."""
    path = os.fspath(path)
    index = read_json(path, 'a shard index ({"weight_map": {weight name: shard file}})')
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f'{path} has no "weight_map" object of weight name -> shard file name; '
                              f"found {type(index).__name__} with keys {sorted(index) if isinstance(index, dict) else []}")
    folder = os.path.dirname(path)
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        raise CheckpointNotFoundError(
            f"{path} lists {len(shards)} shard files, of which {len(missing)} are missing from {folder}: {missing[:5]}; "
            f"found {_found(folder)}")
    return shards


def check_weight_files(folder, names=("model.safetensors",)) -> None:
    """Check the safetensors weights of a local checkpoint folder, where present: `name` itself, or
    the shards its `name.index.json` lists. Missing weights are left for the loader to report."""
    folder = os.fspath(folder)
    for name in names:
        single, index = os.path.join(folder, name), os.path.join(folder, name + ".index.json")
        if os.path.isfile(single):
            check_safetensors(single)
        elif os.path.isfile(index):
            for shard in read_weight_index(index):
                if shard.endswith(".safetensors"):
                    check_safetensors(os.path.join(folder, shard))

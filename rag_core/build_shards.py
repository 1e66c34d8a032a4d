"""Shards of a `build_index` folder: S self-contained `custom` folders plus `shards.json`.

`build_index(..., shards=S)` (`python -m rag_core.build_index ... --shards S`) writes them from fresh
embeddings; `split_index` (`--split-index EXISTING OUT --shards S`) from an existing folder's stored
embeddings, without embedding again. Shard k holds the contiguous global id range [start_k, end_k)
and its own faiss index of the source's kind; `shards.json` is written last, inside one atomic
rename. `rag_core.index.ShardedIndex` reads the result.
"""

from __future__ import annotations

import datetime
import json
import os
import time

import numpy as np

from . import build_index as builder
from .arguments import check_index_build_settings, check_shards
from .index.custom import INCOMPLETE_MARKER, MANIFEST, PASSAGES_DIR
from .storage import atomic_directory, check_output


def shard_ranges(num_passages: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous global id ranges [start, end) of `shards` near-equal shards (the first ones one larger)."""
    shards = check_shards(shards, num_passages)
    size, extra = divmod(num_passages, shards)
    ranges, start = [], 0
    for k in range(shards):
        end = start + size + (1 if k < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges


def write_shards(output_dir: str, dataset, vectors: np.ndarray, manifest: dict, shards: int, settings: dict,
                 overwrite: bool, progress: bool) -> str:
    """Write `shards` self-contained `custom` folders and the shard manifest, all in one atomic rename.

    Each shard gets its own faiss index of `manifest["index_kind"]`, built from its rows of `vectors`;
    `dataset` (every column, in order) is sliced, so passages and any stored ids keep their rows.
    """
    from .index.sharded import SHARD_FORMAT, SHARD_LAYOUT_VERSION, SHARDS_MANIFEST, shard_folder_name

    ranges = shard_ranges(len(vectors), shards)
    index_kind = manifest["index_kind"]
    entries = []
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        open(os.path.join(tmp, INCOMPLETE_MARKER), "w").close()  # survives only a hard kill
        for k, (start, end) in enumerate(ranges):
            name = shard_folder_name(k)
            started = time.perf_counter()
            index = builder.make_faiss_index(vectors[start:end], index_kind, **settings)
            shard_manifest = dict(manifest, num_passages=end - start)
            shard_manifest["faiss"] = dict(manifest.get("faiss") or {},
                                           ivf_nlist=int(index.nlist) if index_kind == "ivfpq" else None)
            shard_manifest["seconds"] = dict(manifest.get("seconds") or {}, index=round(time.perf_counter() - started, 3))
            shard_manifest["shard"] = {"index": k, "of": len(ranges), "start": start, "end": end}
            builder._write_index_folder(os.path.join(tmp, name), dataset.select(range(start, end)), index, shard_manifest, progress)
            entries.append({"folder": name, "start": start, "end": end, "num_passages": end - start})
        sharded = {
            "format": SHARD_FORMAT,
            "layout_version": SHARD_LAYOUT_VERSION,
            "index_kind": index_kind,
            "metric": manifest.get("metric", "inner_product"),
            "dim": int(vectors.shape[1]),
            "num_passages": len(vectors),
            "num_shards": len(entries),
            "shards": entries,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        os.remove(os.path.join(tmp, INCOMPLETE_MARKER))
        with open(os.path.join(tmp, SHARDS_MANIFEST), "w", encoding="utf-8") as f:  # last: marks completion
            json.dump(sharded, f, indent=2)
    return output_dir


def split_index(index_dir: str, output_dir: str, shards: int, *, overwrite: bool = False, progress: bool = True) -> str:
    """Split an existing `build_index` folder into `shards` shards without embedding anything again.

    The passages (every column, stored generator ids included) and their stored embeddings are
    sliced in order; each shard builds its own faiss index of the source's kind and settings
    (`hnsw_m`, `ef_construction`; IVF lists sized for the shard). Written like `build_index(...,
    shards=)`; return `output_dir`.
    """
    import datasets

    from .index.custom import read_manifest
    from .index.passages import PassageStore, check_dataset_dir

    index_dir = os.path.abspath(os.fspath(index_dir))
    output_dir = os.path.abspath(os.fspath(output_dir))
    check_shards(shards)
    check_output(output_dir, overwrite)
    if not os.path.isdir(index_dir):
        raise FileNotFoundError(f"index folder {index_dir!r} does not exist (or is not a folder)")
    if os.path.commonpath([index_dir, output_dir]) in (index_dir, output_dir):
        raise ValueError(f"the output {output_dir!r} must not contain, or be inside, the index folder {index_dir!r}")
    source = read_manifest(index_dir)
    if source is None:
        raise ValueError(f"{index_dir!r} is not a folder written by `python -m rag_core.build_index` (no {MANIFEST})")
    passages_dir = os.path.join(index_dir, PASSAGES_DIR)
    check_dataset_dir(passages_dir, "passages")
    dataset = datasets.load_from_disk(passages_dir)
    store = PassageStore.from_dataset(dataset, source=f"passages {passages_dir!r}")
    check_shards(shards, len(store))
    vectors = np.ascontiguousarray(store.embeddings(np.arange(len(store))), dtype=np.float32)
    faiss_settings = source.get("faiss") or {}
    settings = dict(hnsw_m=faiss_settings.get("hnsw_m") or 32, ef_construction=faiss_settings.get("ef_construction") or 200)
    check_index_build_settings(**settings)
    manifest = dict(source, num_passages=len(store), split_from=index_dir)
    manifest.setdefault("metric", "inner_product")
    if manifest.get("index_kind") not in builder.INDEX_KINDS:
        raise ValueError(f"{index_dir!r}: unknown index_kind {manifest.get('index_kind')!r} in its manifest")
    return write_shards(output_dir, dataset, vectors, manifest, shards, settings, overwrite=overwrite, progress=progress)

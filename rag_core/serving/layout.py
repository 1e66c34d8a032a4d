"""What a service of one index folder runs: its shards (from the folder's manifests) and the
resources each actor asks for. Reads manifests only; no Ray, no faiss."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

from ..errors import IndexFormatError, IndexNotFoundError
from ..index.custom import read_manifest
from ..index.sharded import is_sharded_folder, read_shards_manifest

ACTOR_MEMORY_OVERHEAD = 256 * 2**20  # the Ray worker process, faiss and pyarrow, before any index
PLACEMENT_STRATEGIES = ("SPREAD", "PACK", "STRICT_SPREAD", "STRICT_PACK")


@dataclass(frozen=True)
class ShardPlan:
    """One shard of a served index: a `build_index` folder holding global ids [start, end)."""

    number: int
    folder: str
    start: int
    end: int

    def describe(self) -> str:
        return f"shard {self.number} (ids [{self.start}, {self.end}), {self.folder!r})"


@dataclass(frozen=True)
class IndexPlan:
    """Every shard of an index folder, its kind and dimension."""

    folder: str
    shards: tuple
    index_kind: Optional[str]
    dim: int
    num_passages: int

    def to_dict(self) -> dict:
        return {**asdict(self), "shards": [asdict(shard) for shard in self.shards]}


def plan_index(folder) -> IndexPlan:
    """The shards of `folder`: a `build_index --shards` folder (one per shard) or a `build_index` folder (one)."""
    if folder is None:
        raise IndexNotFoundError("the index service needs the folder written by `python -m rag_core.build_index`")
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise IndexNotFoundError(f"index folder {folder!r} does not exist (or is not a folder)")
    if is_sharded_folder(folder):
        manifest = read_shards_manifest(folder)
        shards = tuple(
            ShardPlan(k, os.path.join(folder, entry["folder"]), entry["start"], entry["end"])
            for k, entry in enumerate(manifest["shards"])
        )
        for shard in shards:
            if not os.path.isdir(shard.folder):
                raise IndexNotFoundError(f"{shard.describe()} of the sharded index {folder!r} is missing")
    else:
        manifest = read_manifest(folder)
        if manifest is None:
            raise IndexFormatError(
                f"{folder!r} is neither a `build_index` folder (manifest.json) nor a sharded one (shards.json); "
                "the index service serves folders written by `python -m rag_core.build_index`"
            )
        shards = (ShardPlan(0, folder, 0, int(manifest["num_passages"])),)
    dim = manifest.get("dim")
    if not isinstance(dim, int):
        raise IndexFormatError(f"the manifest of {folder!r} does not give the vectors' dimension (dim)")
    return IndexPlan(folder, shards, manifest.get("index_kind"), dim, int(manifest["num_passages"]))


def folder_bytes(folder: str) -> int:
    """Bytes of every file under `folder`."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def default_actor_memory(shard: ShardPlan) -> int:
    """Memory an actor serving `shard` reserves: its faiss index (read into memory) plus 10% and a fixed
    process overhead. The passages and their vectors are memory-mapped: the page cache holds what is
    read, shared and reclaimable, so they are not reserved."""
    from ..index.custom import INDEX_FILE

    path = os.path.join(shard.folder, INDEX_FILE)
    size = os.path.getsize(path) if os.path.isfile(path) else folder_bytes(shard.folder)
    return int(size * 1.1) + ACTOR_MEMORY_OVERHEAD

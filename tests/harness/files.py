"""Checks for tests of atomic saves and unreadable files: a folder's bytes, leftover temporary
siblings, and a writer that fails half-way (a full disk)."""

from __future__ import annotations

import errno
import hashlib
import os


def snapshot(folder) -> dict:
    """`{relative path: sha256}` of every file under `folder` (folders as `path/`), to compare saves."""
    folder = os.fspath(folder)
    tree = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            tree[os.path.relpath(os.path.join(root, name), folder) + "/"] = "dir"
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                tree[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return tree


def leftovers(folder) -> list[str]:
    """Temporary siblings of `folder` (`.<name>.*`) left in its parent."""
    folder = os.path.abspath(os.fspath(folder))
    prefix = f".{os.path.basename(folder)}."
    return sorted(n for n in os.listdir(os.path.dirname(folder)) if n.startswith(prefix))


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def write_half_then_fail(path, data: bytes) -> None:
    """Write the first half of `data` to `path`, then fail as a full disk does."""
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    raise disk_full()


def truncate(path, keep: float = 0.5) -> None:
    """Cut `path` to a fraction of its size (an interrupted copy or download)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])

"""Writing files and folders so that a crash or Ctrl-C never leaves a half-written result in place.

Everything is written into a temporary sibling (same filesystem, so the final `os.replace` /
`os.rename` is atomic) and moved into place only when complete. Replacing an existing folder moves
the old one aside first and deletes it only after the new one is in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid

from ..errors import OutputExistsError  # noqa: F401 (re-exported)


def check_output(path: str, overwrite: bool) -> None:
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path!r} already exists; choose another output or pass overwrite=True (--overwrite)")


@contextlib.contextmanager
def atomic_directory(path: str, overwrite: bool = False):
    """Yield a temporary folder; on success it becomes `path`, on any error (or Ctrl-C) it is removed."""
    path = os.path.abspath(os.fspath(path))
    check_output(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        check_output(path, overwrite)  # someone may have created it meanwhile
        if os.path.lexists(path):
            backup = os.path.join(parent, f".{os.path.basename(path)}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, backup)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(backup, path)  # put the old one back
                raise
            _remove(backup)
        else:
            os.rename(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str):
    """Yield a temporary file name; on success it replaces `path` atomically."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)

"""Atomic writes for index files: the library's one implementation lives in `rag_core.storage`;
these names stay importable from here."""

from __future__ import annotations

from ..errors import OutputExistsError  # noqa: F401 (re-exported)
from ..storage import atomic_directory, atomic_file, atomic_save, check_output, check_save_directory  # noqa: F401

__all__ = ["OutputExistsError", "atomic_directory", "atomic_file", "atomic_save", "check_output", "check_save_directory"]

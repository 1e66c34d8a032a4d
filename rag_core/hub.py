"""Where a `from_pretrained` name points: a local folder, or a model id in the huggingface_hub cache.

Nothing here downloads index files; a model id is looked up in (or, when the network is allowed,
fetched into) huggingface_hub's cache with the usual options (`cache_dir`, `revision`, `token`,
`local_files_only`, and `HF_HUB_OFFLINE` / `HF_HOME` from the environment).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies", "subfolder")
# what a RAG checkpoint folder holds besides its index (configs, weights, tokenizers)
_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.h5", "*.txt", "*.model", "*/*.json", "*/*.txt", "*/*.model"]


def pop_hub_kwargs(kwargs: dict) -> dict:
    """Remove and return the hub options from `kwargs`."""
    return {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def resolve_folder(name_or_path, cache_dir: Optional[str] = None, revision: Optional[str] = None,
                   token=None, local_files_only: bool = False, subfolder: Optional[str] = None, **_) -> Path:
    """The local folder behind `name_or_path`: the path itself when it is a folder, else the snapshot
    of the model id in the huggingface_hub cache. A file, or an id found nowhere, raises an error
    that names it."""
    path = Path(name_or_path)
    if path.is_dir():
        return path / subfolder if subfolder else path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; from_pretrained needs a checkpoint folder")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(str(name_or_path), cache_dir=cache_dir, revision=revision, token=token,
                                  local_files_only=bool(local_files_only) or _offline(),
                                  allow_patterns=_ALLOW_PATTERNS)
    except Exception as err:  # noqa: BLE001 - every hub failure gets the same clear message
        raise OSError(f"{name_or_path!r} is neither a local checkpoint folder nor a model id found in the "
                      f"huggingface_hub cache ({type(err).__name__}: {err})") from err
    return Path(local) / subfolder if subfolder else Path(local)

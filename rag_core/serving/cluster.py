"""Importing Ray and joining a cluster: the one place that does either.

Ray is optional (`pip install 'rag-twin[ray]'`); without it every entry point raises
`MissingExtraError` naming the extra. A process joins, in this order: the session it already has
(`ray.init` called by the user), the cluster at `address` (or `RAY_ADDRESS`), a cluster already
running on this machine (`ray start --head`, found as `address="auto"`); only a service that is
told it may (`start_local=True`) starts a local cluster of its own.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from ..errors import IndexServiceError, MissingExtraError

DEFAULT_NAMESPACE = "rag_twin"
INLINE_ANSWER_BYTES = 2**20


def require_ray():
    """The `ray` module, or `MissingExtraError` naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError(
            "serving an index with Ray needs the ray package: pip install 'rag-twin[ray]' "
            "(or pip install ray)"
        ) from None
    return ray


def join_cluster(address: Optional[str] = None, start_local: bool = False, wait_s: float = 0.0, local_options: Optional[dict] = None):
    """Join a Ray cluster (see the module docstring) and return the `ray` module.

    `wait_s`: how long to keep looking for a running cluster before giving up (a worker started
    beside the process that starts the cluster). `local_options`: keyword arguments of `ray.init`
    for a local cluster this call starts (`num_cpus`, `object_store_memory`, ...).
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address if address is not None else os.environ.get("RAY_ADDRESS") or None
    deadline = time.monotonic() + max(0.0, float(wait_s))
    while True:
        try:
            ray.init(address=address or "auto", log_to_driver=False)
            return ray
        except ConnectionError as err:
            if address is None and start_local:
                options = {"include_dashboard": False, "log_to_driver": False, **(local_options or {})}
                # Ray starts worker processes at nice 15 by default: the index actors would lose the CPU to
                # every ordinary process beside them (a trainer on the same node). Same priority as the caller.
                os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
                # answers up to 1 MiB travel inline with the reply instead of through the object store: a
                # batch of 8 questions x 5 passages brings 123 KB of vectors, over Ray's default 100 KiB
                os.environ.setdefault("RAY_max_direct_call_object_size", str(INLINE_ANSWER_BYTES))
                ray.init(**options)
                return ray
            if time.monotonic() >= deadline:
                where = f"at {address!r}" if address else "on this machine (address='auto') and RAY_ADDRESS is not set"
                raise IndexServiceError(
                    f"no Ray cluster found {where}: start one with `ray start --head`, pass address=..., or "
                    f"start the index service in this process (RayIndexService.start); Ray said: {err}"
                ) from None
            time.sleep(0.5)

"""`RayIndex`: the client side of a served index, an `Index` that `RagRetriever` takes as it is.

    >>> index = RayIndex("wiki", address="auto")                  # a service started elsewhere
    >>> retriever = RagRetriever(config, q_tok, g_tok, index=index)

A call is answered by one version of the service from start to end: `RagRetriever` pins the
current version (`RayIndex.pinned()`) for the search and every passage lookup of a call. If the
service swaps versions while the call runs, the shards answer `SUPERSEDED` and the whole call is
asked again on the new version (`IndexVersionChanged`); an answer never mixes versions.

Per shard the client picks the replica with the fewest calls in flight from this process (ties
in turn); an actor that fails or times out is left for another replica of its shard, and a shard
with no replica left raises `ShardUnavailableError` naming the shard -- never a shorter top-k.
Search results bring their passages along (titles, texts, other columns, stored token ids), so
one round trip per shard serves a retriever call.

A `RayIndex` pickles as its name, namespace, address and settings, and reconnects on first use
(a `DataLoader` worker, another `torchrun` process).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Optional

import numpy as np

from ..errors import IndexServiceError, RetrievalInputError, ShardUnavailableError
from ..index.base import Index, IndexVersionChanged, check_n_docs, check_question_hidden_states, on_one_version
from ..index.sharded import merged_order
from .actors import SUPERSEDED
from .cluster import DEFAULT_NAMESPACE, join_cluster

DEFAULT_TIMEOUT_S = 60.0


class RayIndex(Index):
    """An index served by `RayIndexService` actors (see the module docstring).

    Args:
        name, namespace: the service's name and Ray namespace.
        address: the Ray cluster (None: the running session, `RAY_ADDRESS`, or `ray start` on this machine).
        timeout_s: how long one actor may take to answer before the call is asked of another replica; set
            it above the slowest search you expect (a busy actor is not a dead one).
        connect_timeout_s: how long to wait for the cluster and the service to appear.
        attempts: tries per shard and call (default: replicas + 2, counting restarts).
    """

    def __init__(
        self,
        name: str = "rag-index",
        namespace: str = DEFAULT_NAMESPACE,
        address: Optional[str] = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = 60.0,
        attempts: Optional[int] = None,
    ):
        if not isinstance(name, str) or not name:
            raise IndexServiceError(f"the service name must be a non-empty string, got {name!r}")
        for what, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise IndexServiceError(f"{what} must be a positive number of seconds, got {value!r}")
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise IndexServiceError(f"attempts must be a positive integer, got {attempts!r}")
        self.name, self.namespace, self.address = name, namespace, address
        self.timeout_s, self.connect_timeout_s, self.attempts = float(timeout_s), float(connect_timeout_s), attempts
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._directory = None
        self._group: Optional[dict] = None
        self._in_flight: dict = {}  # actor id -> calls from this process not yet answered
        self._turn = itertools.count()
        self.vector_size = self.vector_size if "vector_size" in self.__dict__ else None

    # --- copies: settings only, reconnect on first use ---
    _SETTINGS = ("name", "namespace", "address", "timeout_s", "connect_timeout_s", "attempts", "vector_size")

    def __getstate__(self) -> dict:
        return {key: self.__dict__.get(key) for key in self._SETTINGS}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def __deepcopy__(self, memo: dict) -> "RayIndex":
        copied = object.__new__(type(self))
        copied.__setstate__(self.__getstate__())
        memo[id(self)] = copied
        return copied

    def __repr__(self) -> str:
        version = self._group["version"] if self._group else None
        return f"RayIndex(name={self.name!r}, namespace={self.namespace!r}, version={version})"

    # --- connection ---
    def is_initialized(self) -> bool:
        return self._group is not None

    def init_index(self) -> None:
        """Join the cluster and read the service's current version (waits up to `connect_timeout_s`)."""
        if self._group is not None:
            return
        ray = join_cluster(self.address, wait_s=self.connect_timeout_s)
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                directory = ray.get_actor(self.name, namespace=self.namespace)
                group = ray.get(directory.current_version.remote(), timeout=self.connect_timeout_s)
            except ValueError:  # no actor of that name (yet)
                directory, group = None, None
            if group is not None:
                break
            if time.monotonic() >= deadline:
                state = "has no index loaded" if directory is not None else "does not exist"
                raise IndexServiceError(
                    f"the index service {self.name!r} in namespace {self.namespace!r} {state} after "
                    f"{self.connect_timeout_s:.0f} s; start it with RayIndexService.start(folder, name={self.name!r})"
                )
            time.sleep(0.25)
        with self._lock:
            self._directory = directory
            self._install(group)

    def _install(self, group: dict) -> None:
        if self.vector_size is not None and group["dim"] != self.vector_size:
            raise IndexServiceError(
                f"the index service {self.name!r} serves {group['dim']}-dim vectors, this client expects {self.vector_size}"
            )
        self.vector_size = group["dim"]
        if self._group is None or group["version"] > self._group["version"]:
            self._group = group

    def refresh(self) -> int:
        """Read the service's current version now; returns its number."""
        import ray

        self.init_index()
        group = ray.get(self._directory.current_version.remote(), timeout=self.timeout_s)
        if group is None:
            raise IndexServiceError(f"the index service {self.name!r} in namespace {self.namespace!r} was shut down")
        with self._lock:
            self._install(group)
            return self._group["version"]

    @property
    def version(self) -> int:
        """The version this client sends new calls to."""
        self.init_index()
        return self._group["version"]

    def pinned(self) -> "RayIndexVersion":
        """A view of the current version that one retriever call uses from start to end."""
        self.init_index()
        return RayIndexVersion(self, self._group)

    # --- the Index interface (each call pinned to one version, asked again after a swap) ---
    def _on_current(self, method: str, *args):
        return on_one_version(lambda: getattr(self.pinned(), method)(*args), f"the index service {self.name!r}")

    def get_top_docs(self, question_hidden_states: np.ndarray, n_docs: int = 5):
        return self._on_current("get_top_docs", question_hidden_states, n_docs)

    def search(self, question_hidden_states: np.ndarray, n_docs: int):
        """(scores (B, n_docs) float32, global ids (B, n_docs) int64, -1: none), merged over the shards."""
        return self._on_current("search", question_hidden_states, n_docs)

    def get_doc_dicts(self, doc_ids: np.ndarray) -> list[dict]:
        return self._on_current("get_doc_dicts", doc_ids)

    def __len__(self) -> int:
        self.init_index()
        return int(self._group["num_passages"])

    # --- replica choice ---
    def _choose(self, replicas: list, excluded: set):
        """The replica with the fewest calls in flight from this process, ties in turn."""
        candidates = [a for a in replicas if a._actor_id not in excluded] or list(replicas)
        turn = next(self._turn)
        with self._lock:
            return min(
                enumerate(candidates),
                key=lambda item: (self._in_flight.get(item[1]._actor_id, 0), (item[0] - turn) % len(candidates)),
            )[1]

    def _count(self, actor, delta: int) -> None:
        with self._lock:
            self._in_flight[actor._actor_id] = self._in_flight.get(actor._actor_id, 0) + delta


def _record(answer: dict, i: int, embedding: np.ndarray) -> tuple:
    """Passage `i` of a shard server's answer: (title, text, embedding, other columns, stored ids or None)."""
    stored = answer.get("stored")
    return (
        answer["titles"][i], answer["texts"][i], embedding,
        {name: values[i] for name, values in (answer.get("columns") or {}).items()},
        stored[i] if stored is not None else None,
    )


class RayIndexVersion:
    """One version of a served index, as one retriever call sees it (see `RayIndex.pinned`).

    Passages of the hits of its searches are kept for the rest of the call, so the retriever's
    lookups that follow a search cost no round trip.
    """

    def __init__(self, owner: RayIndex, group: dict):
        self.owner = owner
        self.group = group
        self.version = group["version"]
        self.vector_size = group["dim"]
        self._num = int(group["num_passages"])
        self._starts = np.asarray([shard["start"] for shard in group["shards"]], dtype=np.int64)
        self._memo: dict = {}  # global id -> (title, text, embedding, columns, stored)

    def is_initialized(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._num

    # --- talking to the shards ---
    def _ask(self, calls: dict) -> dict:
        """Run `calls` = {shard number: (method, args)} on one replica each; {shard number: answer}."""
        shards = self.group["shards"]
        attempts = self.owner.attempts or len(shards[0]["replicas"]) + 2
        tried = {k: set() for k in calls}
        errors = {k: [] for k in calls}
        pending = {}

        def submit(k):
            method, args = calls[k]
            actor = self.owner._choose(shards[k]["replicas"], tried[k])
            tried[k].add(actor._actor_id)
            self.owner._count(actor, +1)
            pending[k] = (actor, getattr(actor, method).remote(*args))

        for k in calls:
            submit(k)
        try:
            return self._collect(calls, pending, submit, tried, errors, attempts)
        finally:
            for actor, _ in pending.values():  # left unanswered by an error: no longer counted as busy
                self.owner._count(actor, -1)

    def _collect(self, calls, pending, submit, tried, errors, attempts) -> dict:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        shards = self.group["shards"]
        answers = {}
        while pending:
            k, (actor, ref) = next(iter(pending.items()))
            del pending[k]
            try:
                answer = ray.get(ref, timeout=self.owner.timeout_s)
            except RayTaskError as err:  # the shard server raised: a real error, not a fault
                cause = err.cause if getattr(err, "cause", None) is not None else err
                raise cause from None
            except (RayActorError, GetTimeoutError) as err:
                if isinstance(err, GetTimeoutError):
                    # a slow replica, not a dead one: withdraw the call if it has not started, so that the
                    # retry below does not add a second search to a busy actor's queue
                    try:
                        ray.cancel(ref)
                    except Exception:  # noqa: BLE001 - best effort; a running call finishes and is ignored
                        pass
                errors[k].append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                if self.owner.refresh() > self.version:  # the version was retired meanwhile
                    raise IndexVersionChanged(self.version) from None
                if len(errors[k]) >= attempts:
                    shard = shards[k]
                    raise ShardUnavailableError(
                        f"shard {k} (ids [{shard['start']}, {shard['end']}), {shard['folder']!r}) of the index service "
                        f"{self.owner.name!r} version {self.version}: no replica answered in {attempts} attempts "
                        f"({len(shard['replicas'])} replicas, timeout {self.owner.timeout_s:g} s): {'; '.join(errors[k])}"
                    ) from None
                if len(tried[k]) >= len(shards[k]["replicas"]):
                    tried[k].clear()  # every replica tried once: the restarted ones get another turn
                submit(k)
                continue
            finally:
                self.owner._count(actor, -1)
            if answer["status"] == SUPERSEDED:
                self.owner.refresh()
                raise IndexVersionChanged(self.version)
            answers[k] = answer
        return answers

    # --- search ---
    def _search(self, question_hidden_states, n_docs):
        queries = check_question_hidden_states(question_hidden_states, self.vector_size)
        n_docs = check_n_docs(n_docs)
        shared = queries
        if len(self.group["shards"]) > 1 and queries.nbytes > 64 * 1024:
            import ray

            shared = ray.put(queries)  # stored once, read by every shard
        answers = self._ask({k: ("search", (shared, n_docs)) for k in range(len(self.group["shards"]))})
        parts = [answers[k] for k in sorted(answers)]
        scores = np.concatenate([p["scores"] for p in parts], axis=1).astype(np.float32, copy=False)
        ids = np.concatenate([p["ids"] for p in parts], axis=1).astype(np.int64, copy=False)
        order = merged_order(scores, ids, n_docs)
        merged_ids = np.take_along_axis(ids, order, 1)
        merged_scores = np.where(merged_ids < 0, -np.inf, np.take_along_axis(scores, order, 1)).astype(np.float32)
        embeds = np.concatenate([p["embeddings"] for p in parts], axis=1)
        merged_embeds = np.take_along_axis(embeds, order[:, :, None], 1).astype(np.float32, copy=False)
        # keep the hits' passages for the lookups that follow in this call
        for p in parts:
            flat_ids = p["ids"].reshape(-1)
            for i in np.flatnonzero(flat_ids >= 0):
                if int(flat_ids[i]) not in self._memo:
                    row, col = divmod(int(i), n_docs)
                    self._memo[int(flat_ids[i])] = _record(p, int(i), p["embeddings"][row, col])
        return merged_scores, merged_ids, merged_embeds

    def search(self, question_hidden_states, n_docs):
        scores, ids, _ = self._search(question_hidden_states, n_docs)
        return scores, ids

    def get_top_docs(self, question_hidden_states, n_docs: int = 5):
        _, ids, embeds = self._search(question_hidden_states, n_docs)
        return ids, embeds

    # --- passages by id ---
    def _doc_ids_to_rows(self, doc_ids: np.ndarray) -> np.ndarray:
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        if doc_ids.size and (doc_ids.max() >= self._num):
            bad = doc_ids[doc_ids >= self._num][:5].tolist()
            raise RetrievalInputError(f"doc ids {bad} are out of range: the index holds {self._num} passages")
        return doc_ids

    def _records(self, doc_ids: np.ndarray) -> list:
        """One record per id (1-D; -1 gives an empty passage), fetched from the shards when not seen in this call."""
        flat = self._doc_ids_to_rows(np.asarray(doc_ids, dtype=np.int64).reshape(-1))
        missing = sorted({int(d) for d in flat if d >= 0 and int(d) not in self._memo})
        if missing:
            missing = np.asarray(missing, dtype=np.int64)
            shard_of = np.searchsorted(self._starts, missing, side="right") - 1
            answers = self._ask({int(k): ("lookup", (missing[shard_of == k],)) for k in np.unique(shard_of)})
            for k, answer in answers.items():
                for i, doc in enumerate(missing[shard_of == k].tolist()):
                    self._memo[doc] = _record(answer, i, answer["embeddings"][i])
        empty = ("", "", np.zeros(self.vector_size, dtype=np.float32), {name: None for name in self.group["columns"]}, None)
        return [self._memo[int(d)] if d >= 0 else empty for d in flat]

    def get_passages(self, doc_ids: np.ndarray) -> tuple[list[str], list[str]]:
        records = self._records(doc_ids)
        return [r[0] for r in records], [r[1] for r in records]

    def stored_ids_fingerprint(self) -> Optional[str]:
        return self.group["fingerprint"]

    def get_stored_ids(self, doc_ids: np.ndarray) -> list:
        return [r[4] for r in self._records(doc_ids)]

    def get_doc_dicts(self, doc_ids: np.ndarray) -> list[dict]:
        """As `DenseIndex.get_doc_dicts`: per row, title, text, other columns and embeddings."""
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        if doc_ids.ndim != 2:
            raise RetrievalInputError(f"doc_ids must have shape (batch_size, n_docs), got shape {doc_ids.shape}")
        records = self._records(doc_ids)
        n = doc_ids.shape[1]
        out = []
        for i in range(doc_ids.shape[0]):
            row = records[i * n : (i + 1) * n]
            doc = {"title": [r[0] for r in row], "text": [r[1] for r in row]}
            for name in self.group["columns"]:
                doc[name] = [r[3].get(name) for r in row]
            doc["embeddings"] = np.stack([r[2] for r in row]).astype(np.float32, copy=False)
            out.append(doc)
        return out

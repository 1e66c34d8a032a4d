"""`RayIndexService`: start, find, swap and stop the Ray actors that serve one index folder.

    >>> service = RayIndexService.start("kb_shards", name="wiki", replicas=2, num_cpus=1)
    >>> retriever = RagRetriever(config, q_tok, g_tok, index=service.index())
    >>> service.swap("kb_shards_v2")       # new actors load while the old ones serve; then one switch
    >>> service.shutdown()

The folder is a `python -m rag_core.build_index` output: with `--shards S` every shard gets its
own actors, without it the whole index is one shard. `replicas` actors hold each shard; a query
goes to every shard once (to the least busy replica) and the shards' top-k are merged exactly.
Every actor reserves `num_cpus` CPUs and `memory` bytes (default: its shard's files plus a fixed
overhead) in one placement group (`strategy`, default SPREAD: across nodes where there are
several). The folder must be readable at the same path on every node that runs an actor.

The service is a detached named actor (`name` in `namespace`): every process of a job finds it,
and `start` called by several processes at once starts it once (the others join). It lives until
`shutdown()` or until its cluster stops; a local cluster started by `start` stops when the
process that started it exits.
"""

from __future__ import annotations

from typing import Optional

from ..errors import IndexServiceError
from .actors import IndexDirectory
from .client import DEFAULT_TIMEOUT_S, RayIndex
from .cluster import DEFAULT_NAMESPACE, join_cluster
from .layout import PLACEMENT_STRATEGIES, default_actor_memory, plan_index


def _positive(what: str, value, allow_zero: bool = False, integer: bool = False):
    ok = not isinstance(value, bool) and isinstance(value, (int,) if integer else (int, float))
    if ok:
        ok = value >= 0 if allow_zero else value > 0
    if not ok:
        kind = "integer" if integer else "number"
        raise IndexServiceError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")
    return value


class RayIndexService:
    """Handle on a running index service. Create it with `start` or `connect`."""

    def __init__(self, name: str, namespace: str, directory, address: Optional[str] = None):
        self.name, self.namespace, self.address = name, namespace, address
        self._directory = directory

    # --- creating ---
    @classmethod
    def start(
        cls,
        folder,
        name: str = "rag-index",
        namespace: str = DEFAULT_NAMESPACE,
        replicas: int = 1,
        num_cpus: float = 1.0,
        memory: Optional[int] = None,
        strategy: str = "SPREAD",
        max_restarts: int = 3,
        max_concurrency: int = 2,
        hnsw_ef_search: Optional[int] = None,
        ivf_nprobe: Optional[int] = None,
        rerank_k_factor: Optional[int] = None,
        address: Optional[str] = None,
        load_timeout_s: float = 600.0,
        join_existing: bool = False,
        local_cluster: Optional[dict] = None,
    ) -> "RayIndexService":
        """Start the service of `folder` (or join the one already running under `name`).

        Args:
            folder: a `build_index` output, sharded or not.
            replicas: actors per shard.
            num_cpus, memory: what each actor reserves (memory in bytes; default from the shard's size).
            strategy: placement group strategy (SPREAD, PACK, STRICT_SPREAD, STRICT_PACK).
            max_restarts: how often Ray restarts an actor that dies.
            max_concurrency: calls one actor serves at once (threads).
            hnsw_ef_search, ivf_nprobe, rerank_k_factor: search settings of every shard.
            address: the cluster to join; None: a running one, else a new local cluster.
            load_timeout_s: how long reserving resources and loading may take.
            join_existing: when a service of this name runs with other settings, join it instead of refusing.
            local_cluster: `ray.init` keyword arguments if a local cluster is started (`num_cpus`, ...).
        """
        plan = plan_index(folder)
        request = cls._request(plan, replicas, num_cpus, memory, strategy, max_restarts, max_concurrency,
                               hnsw_ef_search, ivf_nprobe, rerank_k_factor, load_timeout_s)
        request["join_any"] = bool(join_existing)
        ray = join_cluster(address, start_local=True, local_options=local_cluster)
        remote = ray.remote(IndexDirectory)
        directory = remote.options(
            name=name, namespace=namespace, get_if_exists=True, lifetime="detached", num_cpus=0, max_concurrency=8,
        ).remote(name, namespace)
        ray.get(directory.ensure.remote(request))
        return cls(name, namespace, directory, address)

    @classmethod
    def connect(cls, name: str = "rag-index", namespace: str = DEFAULT_NAMESPACE, address: Optional[str] = None,
                timeout_s: float = 60.0) -> "RayIndexService":
        """The service already running under `name` (waits up to `timeout_s` for it to appear)."""
        client = RayIndex(name, namespace, address, connect_timeout_s=timeout_s)
        client.init_index()
        return cls(name, namespace, client._directory, address)

    @staticmethod
    def _request(plan, replicas, num_cpus, memory, strategy, max_restarts, max_concurrency,
                 hnsw_ef_search, ivf_nprobe, rerank_k_factor, load_timeout_s) -> dict:
        _positive("replicas", replicas, integer=True)
        _positive("num_cpus", num_cpus, allow_zero=True)
        _positive("max_restarts", max_restarts, allow_zero=True, integer=True)
        _positive("max_concurrency", max_concurrency, integer=True)
        _positive("load_timeout_s", load_timeout_s)
        if memory is not None:
            _positive("memory", memory, integer=True)
        if strategy not in PLACEMENT_STRATEGIES:
            raise IndexServiceError(f"strategy must be one of {PLACEMENT_STRATEGIES}, got {strategy!r}")
        return {
            "plan": plan.to_dict(),
            "memory": {shard.number: (memory if memory is not None else default_actor_memory(shard)) for shard in plan.shards},
            "settings": {
                "replicas": int(replicas), "num_cpus": float(num_cpus), "strategy": strategy,
                "max_restarts": int(max_restarts), "max_concurrency": int(max_concurrency),
                "hnsw_ef_search": hnsw_ef_search, "ivf_nprobe": ivf_nprobe, "rerank_k_factor": rerank_k_factor,
                "load_timeout_s": float(load_timeout_s),
            },
        }

    # --- using ---
    def index(self, timeout_s: float = DEFAULT_TIMEOUT_S, attempts: Optional[int] = None) -> RayIndex:
        """A client for `RagRetriever(..., index=...)`, connected."""
        client = RayIndex(self.name, self.namespace, self.address, timeout_s=timeout_s, attempts=attempts)
        client.init_index()
        return client

    def _current(self) -> dict:
        import ray
        from ray.exceptions import RayActorError

        try:
            group = ray.get(self._directory.current_version.remote())
        except RayActorError:
            group = None
        if group is None:
            raise IndexServiceError(f"the index service {self.name!r} in namespace {self.namespace!r} was shut down")
        return group

    @property
    def version(self) -> int:
        return self._current()["version"]

    def actors(self) -> list:
        """Handles of the current version's actors, shard by shard: [[replica actors of shard 0], ...]."""
        return [list(shard["replicas"]) for shard in self._current()["shards"]]

    def status(self) -> list[dict]:
        """Per actor of the current version: shard, replica, pid, node, memory (current and peak RSS), load time, calls."""
        import ray

        return ray.get([actor.info.remote() for replicas in self.actors() for actor in replicas])

    def swap(
        self,
        folder,
        drain_s: float = 5.0,
        **settings,
    ) -> int:
        """Serve `folder` as the next version; returns its number.

        New actors load while the old ones serve; once all are loaded the new version becomes
        current in one step and every old actor learns it before this returns (calls they answer
        from then on are asked again on the new version). The old actors are killed `drain_s`
        seconds later. `settings`: as `start` (replicas, num_cpus, ...); unspecified ones keep
        the current version's.
        """
        import ray

        _positive("drain_s", drain_s, allow_zero=True)
        current = self._current()["settings"]
        keys = ("replicas", "num_cpus", "memory", "strategy", "max_restarts", "max_concurrency",
                "hnsw_ef_search", "ivf_nprobe", "rerank_k_factor", "load_timeout_s")
        unknown = sorted(set(settings) - set(keys))
        if unknown:
            raise IndexServiceError(f"swap() got unknown settings {unknown}; known: {list(keys)}")
        merged = {key: settings.get(key, current.get(key)) for key in keys}
        request = self._request(plan_index(folder), **merged)
        return ray.get(self._directory.swap.remote(request, float(drain_s)))["version"]

    def shutdown(self) -> None:
        """Kill every actor of the service and the service itself."""
        import ray

        try:
            ray.get(self._directory.shutdown.remote())
        finally:
            ray.kill(self._directory, no_restart=True)

    def __repr__(self) -> str:
        return f"RayIndexService(name={self.name!r}, namespace={self.namespace!r})"


"""The two kinds of Ray actor behind a served index, as plain classes (`ray.remote` is applied when a
service starts, so this module imports without Ray).

- `ShardServer` holds one shard (a `build_index` folder) in memory and answers searches with
  everything a retriever needs for the hits: global ids, scores, vectors, titles, texts, the other
  columns and the pre-tokenized passage ids stored at build time. A trainer never reads passages
  from disk.
- `IndexDirectory` is the named entry point of a service: it starts the shard servers of each
  version (in a placement group, with explicit CPU and memory requests), tells every client which
  version is current, and swaps versions. It runs its methods on a few threads, so a client asking
  for the current version is not held up by a version that is still loading.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Optional

import numpy as np

from ..errors import IndexServiceError

# The answer of a shard server that a newer version replaced: the client asks again on the newer one.
SUPERSEDED = "superseded"


def _rss_bytes() -> tuple[int, int]:
    """(current, peak) resident memory of this process in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        current = peak
    return current, peak


class ShardServer:
    """One shard of one version, in memory. See the module docstring."""

    def __init__(self, spec: dict):
        from ..index.custom import CustomIndex

        started = time.perf_counter()
        self.spec = dict(spec)
        self.threads = max(1, int(spec.get("threads") or 1))
        self.start = int(spec["start"])
        self.end = int(spec["end"])
        self.version = int(spec["version"])
        self.index = CustomIndex(
            int(spec["dim"]),
            spec["folder"],
            None,
            spec.get("hnsw_ef_search"),
            spec.get("ivf_nprobe"),
            spec.get("rerank_k_factor"),
        )
        self.index.init_index()
        if len(self.index) != self.end - self.start:
            raise IndexServiceError(
                f"shard {spec['shard']} ({spec['folder']!r}) holds {len(self.index)} passages, its id range "
                f"[{self.start}, {self.end}) needs {self.end - self.start}"
            )
        self.fingerprint = self.index.stored_ids_fingerprint()
        self.columns = [c for c in self.index._passages.column_names if c not in ("title", "text", "embeddings")]
        self.superseded_by: Optional[int] = None
        self.calls = 0
        self.load_seconds = time.perf_counter() - started

    # --- service ---
    def info(self) -> dict:
        rss, peak = _rss_bytes()
        return {
            "version": self.version,
            "shard": self.spec["shard"],
            "replica": self.spec["replica"],
            "folder": self.spec["folder"],
            "start": self.start,
            "end": self.end,
            "pid": os.getpid(),
            "node": self.spec.get("node") or os.uname().nodename,
            "rss_bytes": rss,
            "peak_rss_bytes": peak,
            "load_seconds": self.load_seconds,
            "calls": self.calls,
            "fingerprint": self.fingerprint,
            "columns": self.columns,
            "search_parameters": dict(self.index.search_parameters),
            "superseded_by": self.superseded_by,
        }

    def supersede(self, version: int) -> int:
        """From now on answer `SUPERSEDED`: clients ask `version` instead."""
        self.superseded_by = int(version)
        return self.calls

    # --- queries ---
    def search(self, queries: np.ndarray, n_docs: int) -> dict:
        """This shard's top `n_docs` of each query with their passages; `SUPERSEDED` once replaced."""
        if self.superseded_by is not None:
            return {"status": SUPERSEDED, "version": self.version, "current": self.superseded_by}
        self.calls += 1
        import faiss

        # as many threads as CPUs reserved, not the node's count (per calling thread in OpenMP, so per call)
        faiss.omp_set_num_threads(self.threads)
        scores, rows = self.index.search(queries, n_docs)
        answer = {"status": "ok", "version": self.version, "scores": scores}
        answer["ids"] = np.where(rows >= 0, rows + self.start, -1)
        answer["embeddings"] = self.index._embeddings(rows)
        answer.update(self._passages(rows.reshape(-1)))
        return answer

    def lookup(self, global_ids: np.ndarray) -> dict:
        """Passages of global ids of this shard (1-D), in order; `SUPERSEDED` once replaced."""
        if self.superseded_by is not None:
            return {"status": SUPERSEDED, "version": self.version, "current": self.superseded_by}
        self.calls += 1
        rows = np.asarray(global_ids, dtype=np.int64) - self.start
        answer = {"status": "ok", "version": self.version, "embeddings": self.index._embeddings(rows)}
        answer.update(self._passages(rows))
        return answer

    def _passages(self, rows: np.ndarray) -> dict:
        """Titles, texts, other columns and stored ids of local rows (1-D; -1 gives an empty passage)."""
        titles, texts = self.index.get_passages(rows)
        out = {"titles": titles, "texts": texts}
        if self.columns:
            out["columns"] = self.index._passages.columns(rows, skip=("title", "text", "embeddings"))
        if self.fingerprint is not None:
            valid = rows >= 0
            stored = [None] * len(rows)
            if valid.any():
                got = self.index.get_stored_ids(rows[valid])
                for i, ids in zip(np.flatnonzero(valid), got):
                    stored[i] = ids
            out["stored"] = stored
        return out


class IndexDirectory:
    """The named entry point of a service. See the module docstring.

    A version is a dict: `version`, `folder`, `plan` (`IndexPlan.to_dict()`), `settings`, `shards`
    (per shard: number, start, end, folder, `replicas` = actor handles), `fingerprint`, `columns`.
    """

    def __init__(self, name: str, namespace: str):
        self.name, self.namespace = name, namespace
        self.versions: dict = {}
        self.current: Optional[dict] = None
        self._launch_lock = threading.Lock()  # one start or swap at a time
        self._groups: dict = {}  # version -> placement group

    # --- reading ---
    def current_version(self) -> Optional[dict]:
        return self.current

    def describe(self) -> dict:
        """Every live version: number, folder and whether it is current."""
        current = self.current["version"] if self.current else None
        return {"name": self.name, "namespace": self.namespace, "current": current,
                "versions": {v: {"folder": g["folder"], "settings": g["settings"]} for v, g in self.versions.items()}}

    # --- starting and swapping ---
    def ensure(self, request: dict) -> dict:
        """The current version; starts version 1 from `request` when there is none yet.

        Several processes may call this at once: the first starts the actors, the others wait for
        it and get the same version. A request for another folder or layout than the running one is
        refused (use `swap` to change it).
        """
        with self._launch_lock:
            if self.current is None:
                self.current = self._launch(request, 1)
                return self.current
        running = self.current
        differences = [
            f"{key}: running {running['settings'].get(key)!r}, asked {request['settings'].get(key)!r}"
            for key in ("replicas", "num_cpus", "hnsw_ef_search", "ivf_nprobe", "rerank_k_factor")
            if request["settings"].get(key) != running["settings"].get(key)
        ]
        if request["plan"]["folder"] != running["folder"]:
            differences.insert(0, f"folder: running {running['folder']!r}, asked {request['plan']['folder']!r}")
        if differences and not request.get("join_any"):
            raise IndexServiceError(
                f"the index service {self.name!r} (namespace {self.namespace!r}) already runs version "
                f"{running['version']} with other settings ({'; '.join(differences)}); connect to it as it is "
                "(RayIndexService.connect), shut it down first, or swap to the new folder"
            )
        return running

    def swap(self, request: dict, drain_s: float) -> dict:
        """Start the next version from `request`, make it current, then retire the old one.

        The old actors keep serving while the new ones load. Once the new version is current every
        old actor is told so (and answers `SUPERSEDED` from then on) before this returns; they are
        killed `drain_s` seconds later.
        """
        with self._launch_lock:
            old = self.current
            number = (max(self.versions) if self.versions else 0) + 1
            new = self._launch(request, number)
            self.current = new  # the switch: one assignment
            if old is not None:
                import ray

                handles = [actor for shard in old["shards"] for actor in shard["replicas"]]
                try:
                    ray.get([actor.supersede.remote(number) for actor in handles], timeout=60)
                except Exception:  # noqa: BLE001 - a dead old actor needs no telling
                    pass
                timer = threading.Timer(max(0.0, float(drain_s)), self._retire, args=(old["version"],))
                timer.daemon = True
                timer.start()
            return new

    def shutdown(self) -> int:
        """Kill every actor of every version and free their placement groups; returns how many were killed."""
        killed = 0
        with self._launch_lock:
            for number in list(self.versions):
                killed += self._retire(number)
            self.current = None
        return killed

    def _retire(self, number: int) -> int:
        import ray
        from ray.util.placement_group import remove_placement_group

        group = self.versions.pop(number, None)
        if group is None:
            return 0
        killed = 0
        for shard in group["shards"]:
            for actor in shard["replicas"]:
                try:
                    ray.kill(actor, no_restart=True)
                    killed += 1
                except Exception:  # noqa: BLE001 - already gone
                    pass
        pg = self._groups.pop(number, None)
        if pg is not None:
            try:
                remove_placement_group(pg)
            except Exception:  # noqa: BLE001
                pass
        return killed

    def _launch(self, request: dict, number: int) -> dict:
        """Start and load every shard server of version `number`; on any failure kill them and raise."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        plan, settings = request["plan"], request["settings"]
        replicas, num_cpus = int(settings["replicas"]), float(settings["num_cpus"])
        memories = request["memory"]  # per shard, bytes
        bundles, where = [], []
        for shard in plan["shards"]:
            for replica in range(replicas):
                bundle = {"CPU": num_cpus} if num_cpus > 0 else {}
                if memories[shard["number"]]:
                    bundle["memory"] = int(memories[shard["number"]])
                bundles.append(bundle or {"CPU": 0.001})
                where.append((shard, replica))
        pg = placement_group(bundles, strategy=settings["strategy"], name=f"{self.name}/v{number}")
        timeout = float(settings["load_timeout_s"])
        ready, _ = ray.wait([pg.ready()], timeout=timeout)
        if not ready:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(pg)
            raise IndexServiceError(
                f"the index service {self.name!r} could not reserve {len(bundles)} actors ({bundles[0]} each, "
                f"strategy {settings['strategy']}) within {timeout:.0f} s; the cluster has "
                f"{ray.available_resources()} free: lower num_cpus or memory, or add nodes"
            )
        server = ray.remote(ShardServer)
        actors = []
        for i, (shard, replica) in enumerate(where):
            spec = dict(
                shard=shard["number"], replica=replica, version=number, folder=shard["folder"],
                start=shard["start"], end=shard["end"], dim=plan["dim"], threads=max(1, int(num_cpus)),
                hnsw_ef_search=settings["hnsw_ef_search"], ivf_nprobe=settings["ivf_nprobe"],
                rerank_k_factor=settings["rerank_k_factor"],
            )
            options = dict(
                name=f"{self.name}/v{number}/shard-{shard['number']}/replica-{replica}",
                namespace=self.namespace,
                num_cpus=num_cpus,
                max_restarts=int(settings["max_restarts"]),
                max_task_retries=0,  # the client retries, on another replica first
                max_concurrency=int(settings["max_concurrency"]),
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
            )
            if "memory" in bundles[i]:
                options["memory"] = bundles[i]["memory"]
            actors.append(server.options(**options).remote(spec))
        infos = []
        try:
            for (shard, replica), actor in zip(where, actors):
                infos.append(ray.get(actor.info.remote(), timeout=timeout))
        except Exception as err:  # noqa: BLE001 - any failure: undo the whole version
            for actor in actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(pg)
            shard, replica = where[len(infos)]
            cause = getattr(err, "cause", None) or err
            raise IndexServiceError(
                f"the index service {self.name!r} could not load shard {shard['number']} (ids [{shard['start']}, "
                f"{shard['end']}), {shard['folder']!r}), replica {replica}, of version {number}: "
                f"{type(cause).__name__}: {cause}"
            ) from None
        fingerprints = {info["fingerprint"] for info in infos}
        group = {
            "version": number,
            "folder": plan["folder"],
            "plan": plan,
            "settings": dict(settings),
            "dim": plan["dim"],
            "num_passages": plan["num_passages"],
            "fingerprint": fingerprints.pop() if len(fingerprints) == 1 else None,
            "columns": infos[0]["columns"],
            "shards": [
                {**shard, "replicas": [a for (s, _), a in zip(where, actors) if s["number"] == shard["number"]]}
                for shard in plan["shards"]
            ],
        }
        self.versions[number] = group
        self._groups[number] = pg
        return group

"""An index served by Ray actors: shards and replicas across processes and nodes.

    >>> from rag_core.serving import RayIndexService
    >>> service = RayIndexService.start("kb_shards", name="wiki", replicas=2)   # build_index --shards output
    >>> retriever = RagRetriever(config, q_tok, g_tok, index=service.index())
    >>> # any other process of the job: RagRetriever(..., index=RayIndex("wiki", address="auto"))

- `RayIndexService` (service.py): starts, finds, swaps and stops the actors of one index folder.
- `RayIndex` (client.py): the `Index` a retriever uses; fans a query out to the shards, merges
  their top-k exactly, retries on replicas, follows version swaps.
- actors.py: the shard servers and the named directory; layout.py: shards and resources of a
  folder; cluster.py: importing Ray and joining a cluster.

Needs `pip install 'rag-twin[ray]'`; without Ray the classes raise `MissingExtraError` when used.
Importing this package does not import Ray.
"""

from .client import RayIndex, RayIndexVersion
from .cluster import DEFAULT_NAMESPACE
from .layout import IndexPlan, ShardPlan, plan_index
from .service import RayIndexService

__all__ = ["DEFAULT_NAMESPACE", "IndexPlan", "RayIndex", "RayIndexService", "RayIndexVersion", "ShardPlan", "plan_index"]

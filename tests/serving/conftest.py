"""A local Ray cluster for the tests of `rag_core.serving`, started once per test process.

The tests of this folder are in the xdist group "ray" (`make test` runs pytest with
`--dist loadgroup`), so one worker runs them all against one cluster. Logical CPUs exceed the
machine's cores on purpose: the actors reserve 0.5 CPU each and mostly wait.
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/serving/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a local Ray cluster (started here unless this process already joined one)."""
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
        started = True
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()

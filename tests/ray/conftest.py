"""A real two-node Ray cluster on 127.0.0.1 for the session, and a modelhost server on it.

The head node declares the ``R`` resource (it has R); the worker node does not. Both run on
this machine, as separate raylets with node ids of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray.cluster_utils import Cluster

from tests.helpers import Server, running_server

#: hardware tiers of the session's server: one the cluster has room for, one it has no GPU for
TIERS = {
    "ray-small": {"cpus": 1, "memory_mb": 100},
    "ray-gpu": {"cpus": 0.1, "memory_mb": 100, "gpus": 1},
}


@dataclass
class RayCluster:
    cluster: Any
    head: Any
    worker: Any

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def head_id(self) -> str:
        return str(self.head.node_id)

    @property
    def worker_id(self) -> str:
        return str(self.worker.node_id)

    def add_worker(self) -> None:
        self.worker = self.cluster.add_node(num_cpus=4)
        self.cluster.wait_for_nodes()

    def kill_worker(self) -> None:
        self.cluster.remove_node(self.worker, allow_graceful=False)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 4, "resources": {"R": 1}},
    )
    try:
        worker = cluster.add_node(num_cpus=4)
        cluster.wait_for_nodes()
        yield RayCluster(cluster, cluster.head_node, worker)
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def ray_server(
    ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real ``modelhost serve`` with backend = ray on the session's cluster."""
    home: Path = tmp_path_factory.mktemp("ray-server") / "home"
    env = {
        "MODELHOST_BACKEND": "ray",
        "MODELHOST_RAY_ADDRESS": ray_cluster.address,
        "MODELHOST_RAY_INSTANCE_CPUS": "0.1",
        # an instance placed on a node must load within this (one no node can take waits)
        "MODELHOST_LOAD_TIMEOUT_SECONDS": "30",
        "MODELHOST_HARDWARE_TIERS": json.dumps(TIERS),
    }
    with running_server(home, env) as server:
        yield server

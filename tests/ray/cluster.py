"""A two-node Ray cluster on 127.0.0.1 for as long as this process runs, for running the
integration suite against ``backend = ray`` (``scripts/test`` does, after the whole suite).

    .venv/bin/python -m tests.ray.cluster ADDRESS_FILE

Writes the cluster's address to ADDRESS_FILE once both nodes are up, and shuts the cluster down
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from ray.cluster_utils import Cluster


def main(address_file: str) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "resources": {"R": 1}})
    try:
        cluster.add_node(num_cpus=4)
        cluster.wait_for_nodes()
        staging = Path(address_file + ".tmp")
        staging.write_text(str(cluster.address))
        staging.rename(address_file)
        stop.wait()
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

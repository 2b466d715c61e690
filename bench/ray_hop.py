"""What a Ray actor method call costs per call: the design the Ray backend did not take.

    .venv/bin/python bench/ray_hop.py [--calls 2000]

Starts a one-node Ray cluster on 127.0.0.1, creates one actor that runs ``add`` on a JSON body
(as a worker would), and times sequential ``await actor.call.remote(body)`` round trips from an
asyncio driver, like a gateway would make them. Prints p50 and p99 in milliseconds. The Ray
backend instead has the gateway talk to the worker over TCP with modelhost's own framed protocol
(see docs/architecture.md, "The Ray backend"); bench/run.py --backend ray measures that path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import ray
from ray.cluster_utils import Cluster


class Adder:
    def call(self, body: bytes) -> bytes:
        data = json.loads(body)["data"]
        return json.dumps({"result": data["x"] + data["y"]}).encode()


async def _measure(actor: object, calls: int) -> list[float]:
    body = b'{"data": {"x": 1, "y": 2}}'
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        await actor.call.remote(body)  # type: ignore[attr-defined]
        took.append((time.perf_counter() - started) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    options = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        actor = ray.remote(Adder).options(num_cpus=0.1).remote()
        asyncio.run(_measure(actor, 200))  # warm-up
        took = sorted(asyncio.run(_measure(actor, options.calls)))
        p50 = statistics.median(took)
        p99 = took[int(len(took) * 0.99) - 1]
        print(f"actor method call, add: p50 {p50:.3f} ms, p99 {p99:.3f} ms over {len(took)} calls")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()

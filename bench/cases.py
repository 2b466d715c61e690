"""What is benchmarked: each case is one published function and one request body.

The same case definition drives all three measurements (modelhost, the ceiling and the floor),
so they cannot drift apart: the floor calls the very file that is published, with the arguments
parsed from the very body that wrk sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
WINE_DIR = ROOT / "examples" / "wine_quality"
WINE_MODEL = WINE_DIR / "results" / "classifier.pkl"

#: One BLAS/OpenMP thread, as modelhost gives each instance: the three measurements must do
#: the same work with the same parallelism, and a 2-core machine has no cores to spare.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Case:
    """One function to publish and the request body to call it with."""

    name: str
    model: str
    project: Path
    file: str
    function: str
    body: bytes
    instances: int
    floor_calls: int
    #: the floor again just before each round at 1 connection: a few seconds' worth
    round_floor_calls: int
    #: a batching function's largest batch (published with --batch-max-size), or None
    batch_max_size: int | None = None
    batch_max_wait_ms: float | None = None
    #: the ceiling's path: the same work done in-process, one call at a time
    ceiling_path: str = ""

    @property
    def script(self) -> Path:
        return self.project / self.file

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments the body means (DESIGN.md §3); for a batching
        function, a batch of one input: the body's data object or parameters array."""
        request = orjson.loads(self.body)
        if self.batch_max_size is not None:
            return [[request["data"] if "data" in request else request["parameters"]]], {}
        if "data" in request:
            return [], dict(request["data"])
        return list(request["parameters"]), {}

    def answer(self, returned: Any) -> Any:
        """What a caller gets as ``result`` when the function returned ``returned``."""
        return returned[0] if self.batch_max_size is not None else returned

    @property
    def ceiling(self) -> str:
        return self.ceiling_path or f"/{self.name}"


CASES: dict[str, Case] = {
    "add": Case(
        name="add",
        model="add",
        project=ROOT / "bench" / "projects" / "add",
        file="add.py",
        function="add",
        body=b'{"data": {"x": 1, "y": 2}}',
        instances=2,
        floor_calls=200_000,
        round_floor_calls=50_000,
    ),
    "rf": Case(
        name="rf",
        model="wine",
        project=WINE_DIR,
        file="predict.py",
        function="predict",
        body=b'{"parameters": [[5.6, 0.615, 0, 1.6, 0.089, 16, 59, 0.9943, 3.58, 0.52, 9.9]]}',
        instances=2,
        floor_calls=2_000,
        round_floor_calls=300,
    ),
    # The same forest behind predict_batch, one row per request: the instances get the calls
    # that wait while they are busy as one batch. The ceiling does rf's work, a call at a time.
    "rf_batch": Case(
        name="rf_batch",
        model="wine-batch",
        project=WINE_DIR,
        file="predict.py",
        function="predict_batch",
        body=b'{"parameters": [[5.6, 0.615, 0, 1.6, 0.089, 16, 59, 0.9943, 3.58, 0.52, 9.9]]}',
        instances=2,
        floor_calls=2_000,
        round_floor_calls=300,
        batch_max_size=64,
        batch_max_wait_ms=5,
        ceiling_path="/rf",
    ),
}

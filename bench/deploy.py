"""Put the benchmark's models on a running modelhost, the way a user would, and check them.

Publishing goes through the public Python client (``modelhost.Client``), so the benchmark
measures exactly what users deploy. Each case is then called once by hand and its answer
checked: a broken server must not be able to produce a fast benchmark of errors.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

import modelhost
from bench.cases import WINE_DIR, WINE_MODEL, Case
from modelhost import urls

_INSTANCES_TIMEOUT_SECONDS = 120.0
_TRAIN_TIMEOUT_SECONDS = 300.0
_PUBLISH_TIMEOUT_SECONDS = 300.0
_TOKEN_TIMEOUT_SECONDS = 30.0


class DeployError(Exception):
    """A model could not be published, scaled, or did not answer correctly."""


def ensure_wine_model() -> None:
    """Train the wine example if its ``results/classifier.pkl`` is missing (it is git-ignored)."""
    if WINE_MODEL.is_file():
        return
    print(f"{WINE_MODEL} is missing; training it with examples/wine_quality/train.py")
    subprocess.run(
        [sys.executable, str(WINE_DIR / "train.py")], check=True, timeout=_TRAIN_TIMEOUT_SECONDS
    )


def publish(client: modelhost.Client, case: Case) -> None:
    """Publish the case's project and scale it to ``case.instances`` ready instances."""
    client.publish(
        case.project,
        name=case.model,
        file=case.file,
        function=case.function,
        batch_max_size=case.batch_max_size,
        batch_max_wait_ms=case.batch_max_wait_ms,
        wait_timeout=_PUBLISH_TIMEOUT_SECONDS,
    )
    if case.instances != 1:
        client.update_model(case.model, instance_count=case.instances)
    wait_for_instances(client, case)


def wait_for_instances(client: modelhost.Client, case: Case) -> None:
    """Wait until the model runs exactly ``case.instances`` instances, all ready."""
    deadline = time.monotonic() + _INSTANCES_TIMEOUT_SECONDS
    states: list[str] = []
    while time.monotonic() < deadline:
        states = [i["state"] for i in client.instances(case.model)]
        if states == ["ready"] * case.instances:
            return
        time.sleep(0.2)
    raise DeployError(
        f"model {case.model} should run {case.instances} ready instance(s) but has {states} "
        f"after {_INSTANCES_TIMEOUT_SECONDS:g} s"
    )


def post(url: str, case: Case, headers: Mapping[str, str]) -> httpx.Response:
    return httpx.post(
        url,
        content=case.body,
        headers={"Content-Type": "application/json", **headers},
        timeout=30.0,
    )


def invocation_headers(
    client: modelhost.Client, case: Case, limits: str | None = None
) -> dict[str, str]:
    """What a caller must send: nothing for a public model, else a fresh access token, with
    ``limits`` (``"RATE,QUOTA"``) when given.

    Models need an access token by default (``default_invocation_mode``); the benchmark then
    measures that default path, token check included, the way a real caller uses it.
    """
    if client.model(case.model).get("invocation_mode", "public") == "public":
        return {}
    response = httpx.post(
        f"{client.url}{urls.api_model(case.model)}/tokens",
        json={"name": "benchmark", **_limits(limits)},
        headers={"Authorization": f"Bearer {client.api_key}"},
        timeout=30.0,
    )
    if response.status_code != 201 or "token" not in response.json():
        raise DeployError(
            f"{case.model} needs an access token, and creating one answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return {"Authorization": f"Bearer {response.json()['token']}"}


def wait_for_token(url: str, case: Case, headers: Mapping[str, str]) -> None:
    """The gateway learns new tokens on the reconciler's next tick, not at once. Poll slowly:
    it locks out a source address after a few refused calls, valid token or not."""
    deadline = time.monotonic() + _TOKEN_TIMEOUT_SECONDS
    while True:
        time.sleep(1.0)
        if post(url, case, headers).status_code != 401:
            return
        if time.monotonic() > deadline:
            raise DeployError(f"the new access token for {case.model} is still refused")


def call_once(url: str, case: Case, headers: Mapping[str, str]) -> Any:
    """POST the case's body once and return the ``result``; raise unless it is a clean 200."""
    response = post(url, case, headers)
    if response.status_code != 200:
        raise DeployError(f"POST {url} answered {response.status_code}: {response.text[:500]}")
    try:
        return orjson.loads(response.content)["result"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise DeployError(
            f"POST {url} answered 200 without a result: {response.text[:500]}"
        ) from None


def check_answer(url: str, case: Case, expected: Any, headers: Mapping[str, str]) -> None:
    """The server must return what the function returns in-process (the floor's result)."""
    result = call_once(url, case, headers)
    if result != expected:
        raise DeployError(f"POST {url} returned {result!r}; the function returns {expected!r}")


def batch_sizes(client: modelhost.Client, case: Case) -> dict[str, int]:
    """The batches the server sent the case's instances, by size bucket ("<=1", "<=2", …,
    as /metrics' modelhost_batch_size counts them), over the whole run."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(
        f"{client.url}/metrics",
        headers={"Authorization": f"Bearer {client.api_key}"},
        timeout=30,
    )
    answer.raise_for_status()
    cumulative: dict[float, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "modelhost_batch_size_bucket" and (
                sample.labels.get("model") == case.model
            ):
                bound = float(sample.labels["le"])
                cumulative[bound] = cumulative.get(bound, 0.0) + sample.value
    sizes: dict[str, int] = {}
    below = 0.0
    for bound in sorted(cumulative):
        count = cumulative[bound] - below
        below = cumulative[bound]
        if count:
            sizes["more" if bound == float("inf") else f"<={bound:g}"] = int(count)
    return sizes


def publish_to_serving(client: modelhost.Client, case: Case, rounds: int = 3) -> list[float]:
    """Seconds from ``publish`` of the case's project (a new model each round, in the server's
    environment) to the first 200 answer of its invocation URL, one per round.

    The model is created and made public beforehand, so the clock covers what a user waits
    for after ``modelhost publish``: upload, bundle, import check, instance start, route.
    """
    found: list[float] = []
    for round_ in range(1, rounds + 1):
        name = f"{case.model}-publish-{round_}"
        created = httpx.post(
            f"{client.url}{urls.api_models()}",
            json={"name": name},
            headers={"Authorization": f"Bearer {client.api_key}"},
            timeout=30.0,
        )
        if created.status_code != 201:
            raise DeployError(f"creating {name} answered {created.status_code}: {created.text}")
        client.set_access(name, invocation="public")
        url = f"{client.url}/models/{name}/latest/model"
        with httpx.Client(timeout=30.0) as http:
            started = time.perf_counter()
            client.publish(
                case.project,
                name=name,
                file=case.file,
                function=case.function,
                environment="server",
                wait=False,
            )
            while True:
                answer = http.post(
                    url, content=case.body, headers={"Content-Type": "application/json"}
                )
                if answer.status_code == 200:
                    found.append(time.perf_counter() - started)
                    break
                if time.perf_counter() - started > _PUBLISH_TIMEOUT_SECONDS:
                    raise DeployError(f"{name} did not answer 200 after its publish")
                time.sleep(0.005)
    return found


def _limits(limits: str | None) -> dict[str, str]:
    if not limits:
        return {}
    rate, _, quota = limits.partition(",")
    return {key: value for key, value in (("rate", rate), ("quota", quota)) if value}

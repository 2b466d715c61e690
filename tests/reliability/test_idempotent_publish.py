"""A publish whose answer is lost is retried safely (issue 15: the retry made a second
version): the client sends an Idempotency-Key with every publish and retries once on a lost
connection, and the server answers a retry with the version the first attempt made."""

from __future__ import annotations

import io
import tarfile

import httpx
import pytest

from modelhost import Client
from tests.helpers import PROJECTS, Server
from tests.reliability.cuttable import AnswerLoser

pytestmark = pytest.mark.integration


def test_a_publish_whose_answer_is_lost_is_retried_into_the_same_version(
    server: Server,
) -> None:
    # the publish's own answer (201), not that of the check the client makes first (204)
    proxy = AnswerLoser(("127.0.0.1", server.port), losing=b"HTTP/1.1 201")
    proxy.restore()
    said: list[str] = []
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", server.api_key) as client:
            client.publish(PROJECTS / "calc", name="lost-answer", file="calc.py", function="add")
            proxy.lose_next.set()  # the next publish reaches the server; its answer does not
            version = client.publish(
                PROJECTS / "calc",
                name="lost-answer",
                file="calc.py",
                function="add",
                on_progress=said.append,
            )
    finally:
        proxy.cut()

    assert proxy.lost == 1
    assert any("Idempotency-Key" in line for line in said), said
    assert version["number"] == 2
    assert [v["number"] for v in server.client().versions("lost-answer")] == [1, 2]


def _archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
    return buffer.getvalue()


def _publish(server: Server, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/gzip"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(
        f"{server.url}/api/v1/models/keyed/versions",
        params={"file": "calc.py", "function": "add"},
        headers=headers,
        content=_archive(),
        timeout=60,
    )


def test_the_same_key_returns_the_same_version_and_a_new_key_makes_the_next(
    server: Server,
) -> None:
    first = _publish(server, "key-one")
    again = _publish(server, "key-one")
    other = _publish(server, "key-two")
    unkeyed = _publish(server, None)
    numbers = [r.json()["version"]["number"] for r in (first, again, other, unkeyed)]
    assert numbers == [1, 1, 2, 3]


def test_a_malformed_key_is_refused_with_what_a_key_may_be(server: Server) -> None:
    answer = _publish(server, "x" * 129)
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json()["error"]["message"]

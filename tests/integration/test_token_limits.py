"""Rates and quotas of access tokens against a real server with two gateway processes (issue 20
point 4): over either, a call gets 429 with Retry-After; a quota counts calls answered by every
process; usage shows in ``tokens list`` and survives a restart. The tests run in order on one
server: the last one restarts it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration

MODEL = "metered"
#: token name -> secret, for the tests that come later
SECRETS: dict[str, str] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("token-limits") / "home"
    env = {"MODELHOST_GATEWAY_PROCESSES": "2", "MODELHOST_QUOTA_FLUSH_SECONDS": "0.5"}
    with running_server(home, env) as running:
        client = running.client()
        client.publish(PROJECTS / "fussy", file="model.py", function="work", name=MODEL)
        client.update_model(MODEL, instance_count=2)
        client.set_access(MODEL, invocation="token")

        def two_ready() -> bool:
            return [i["state"] for i in client.instances(MODEL)] == ["ready"] * 2

        wait_until(two_ready, timeout=60)
        yield running


def _call(server: Server, secret: str) -> httpx.Response:
    """A call on a fresh connection: the kernel spreads them over the two processes."""
    url = f"{server.url}/models/{MODEL}/latest/model"
    return httpx.post(url, json={"data": {}}, auth=(secret, secret), timeout=60)


def _usage(server: Server, name: str) -> dict[str, object]:
    [token] = [t for t in server.client().tokens(MODEL) if t["name"] == name]
    return dict(token["usage"])


def test_a_call_over_the_rate_gets_429_with_retry_after_then_passes_once_a_call_refilled(
    server: Server,
) -> None:
    secret = server.client().create_token(MODEL, "hasty", rate="1/s")["token"]
    answers: list[httpx.Response] = []
    wait_until(lambda: answers.append(_call(server, secret)) or answers[-1].status_code == 429, 30)
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert "Access token 'hasty' is over its rate limit of 1/s" in error["message"]
    wait_until(lambda: _call(server, secret).status_code == 200, 30)


def test_a_quota_counts_the_calls_of_both_gateway_processes_together(server: Server) -> None:
    secret = SECRETS["metered-a"] = server.client().create_token(MODEL, "metered-a", quota="5/day")[
        "token"
    ]
    now = dt.datetime.now(dt.timezone.utc)  # before any refusal: Retry-After is at most this far
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _call(server, secret), range(24)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [429] * 19
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "quota_exceeded"
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    assert 0 < int(refused.headers["Retry-After"]) <= (midnight - now).total_seconds() + 1
    assert f"it resets at {midnight:%Y-%m-%dT%H:%M:%SZ}" in refused.json()["error"]["message"]
    assert _usage(server, "metered-a")["used"] == 5
    assert _usage(server, "metered-a")["limit"] == 5

    listed = server.cli("tokens", "list", MODEL, check=True).stdout
    assert "5/5 day" in next(line for line in listed.splitlines() if "metered-a" in line)


def test_bad_limits_get_a_specific_message_in_the_api_and_the_cli(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    tokens = f"{server.url}/api/v1/models/{MODEL}/tokens"
    for body, fragment in [
        ({"name": "x", "rate": "50/fortnight"}, "'fortnight' is not a unit of one"),
        ({"name": "x", "rate": "0/s"}, "must be 1 or more"),
        ({"name": "x", "quota": "-1/day"}, "must be 1 or more"),
        ({"name": "x", "quota": "abc"}, "such as 100000/day"),
    ]:
        answer = httpx.post(tokens, json=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_limit"
        assert fragment in answer.json()["error"]["message"]
    answer = httpx.patch(f"{tokens}/hasty", json={"quota": "100/fortnight"}, headers=headers)
    assert answer.status_code == 400
    assert "use day or month" in answer.json()["error"]["message"]

    result = server.cli("tokens", "create", MODEL, "--name", "x", "--rate", "50/fortnight")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: '50/fortnight' is not a rate")
    assert len(result.stderr.strip().splitlines()) == 1


def test_changing_a_token_s_limits_applies_at_once_and_is_audited(server: Server) -> None:
    result = server.cli("tokens", "update", MODEL, "metered-a", "--quota", "7/day", check=True)
    assert "quota 7/day" in result.stdout
    assert _usage(server, "metered-a")["used"] == 5  # the window's calls still count
    spare = server.client().create_token(MODEL, "spare")  # no limits: no usage to show
    assert spare["usage"] is None
    events = server.client().audit(MODEL, action="token-update")
    # newest first: the change, and before it the refused "100/fortnight"
    assert [e["outcome"] for e in events] == ["success", "failed"]
    event = events[0]
    assert event["detail"]["quota"] == {"from": "5/day", "to": "7/day"}
    assert event["detail"]["name"] == "metered-a"


def test_quota_usage_is_written_to_the_database_and_survives_a_restart(server: Server) -> None:
    engine = sa.create_engine(f"sqlite:///{server.home / 'modelhost.db'}")

    def saved() -> int:
        with engine.connect() as conn:
            query = sa.text("SELECT quota_used FROM model_tokens WHERE name = 'metered-a'")
            return int(conn.execute(query).scalar_one())

    try:
        wait_until(lambda: saved() == 5, 10)  # flushed in the background
    finally:
        engine.dispose()
    server.stop()
    server.start()
    assert _usage(server, "metered-a")["used"] == 5
    [token] = [t for t in server.client().tokens(MODEL) if t["name"] == "metered-a"]
    assert token["quota"] == "7/day"
    client = server.client()
    wait_until(lambda: [i["state"] for i in client.instances(MODEL)] == ["ready"] * 2, 60)
    statuses = [_call(server, SECRETS["metered-a"]).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # 5 before the restart, 2 more of 7

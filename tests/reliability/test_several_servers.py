"""Two real ``modelhost serve`` processes on one PostgreSQL database (issue 18): both answer
everything, one leads, a change made through one reaches the other within a second, a
schedule fires once per tick across them and across a leader change, and a client that
retries once on the other server loses no call when one is killed."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from modelhost import Client
from tests.helpers import PROJECTS, Server, wait_until
from tests.reliability.test_server_crash import _workers_of

pytestmark = pytest.mark.integration


def _health(server: Server) -> dict[str, object]:
    try:
        answer = httpx.get(f"{server.url}/health", timeout=2)
    except httpx.TransportError:
        return {}
    return dict(answer.json())


def _start_beside(first: Server, home: Path, env: Mapping[str, str] | None = None) -> Server:
    """Another server on ``first``'s database and bundle store, on its own port and data
    directory, with ``first``'s server key copied in (as docs/scaling.md says to)."""
    home.mkdir(parents=True, exist_ok=True)
    key = home / "server.key"
    if not key.exists():
        shutil.copyfile(first.home / "server.key", key)
        key.chmod(0o600)
    shared = {k: v for k, v in first.env.items() if k.startswith("MODELHOST_")}
    shared.pop("MODELHOST_HOME")
    shared.pop("MODELHOST_PORT")
    return Server(home, {**shared, **(env or {})}).start()


@contextlib.contextmanager
def _two_servers(
    tmp_path: Path, postgres_url: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[Server, Server]]:
    common = {
        "MODELHOST_DATABASE_URL": postgres_url,
        "MODELHOST_BUNDLE_STORE": str(tmp_path / "shared-bundles"),
        **(env or {}),
    }
    first = Server(tmp_path / "a", common).start()
    second: Server | None = None
    try:
        # The scenarios below start from "the first server leads". It takes the lead on its
        # first try on a quiet machine; under load that try may come a little later.
        wait_until(lambda: _health(first)["leader"] is True, timeout=30)
        second = _start_beside(first, tmp_path / "b")
        yield first, second
    finally:
        if second is not None:
            second.stop()
        first.stop()


def _as_admin(first: Server, server: Server) -> Client:
    """The first admin's client (its key is in the first server's data directory) on
    ``server``."""
    return Client(server.url, first.api_key)


def test_two_servers_on_one_postgresql_database_both_serve_and_exactly_one_leads(
    tmp_path: Path, postgres_url: str
) -> None:
    with _two_servers(tmp_path, postgres_url) as (a, b):
        assert _health(a)["ready"] is True
        assert _health(b)["ready"] is True
        assert [_health(a)["leader"], _health(b)["leader"]] == [True, False]

        # Published through one, the model is answered by both, each from its own instance.
        a.client().publish(PROJECTS / "calc", file="calc.py", function="add", name="adder")
        for server in (a, b):
            answer = wait_until(
                lambda s=server: (
                    (r := s.invoke("adder", {"data": {"x": 2, "y": 3}})).status_code == 200 and r
                ),
                timeout=60,
            )
            assert answer.json()["result"] == 5
        wait_until(lambda: len(_workers_of(a.home)) == 1 and len(_workers_of(b.home)) == 1)

        # The API and the UI answer on the other one too: a session begun on one server is
        # good on the other (the cookie is encrypted with the shared server key).
        with _as_admin(a, b) as on_b:
            assert [m["name"] for m in on_b.models()] == ["adder"]
            on_b.add_user("alice", "a-long-password-1", admin=True)
            # An asynchronous prediction submitted to the follower is run by the leader.
            sent = on_b.submit("adder", data={"x": 4, "y": 5}, as_tester=True)
            done = on_b.result(sent, timeout=30)
            assert (done.status, done.result) == ("succeeded", 9)
        with httpx.Client(base_url=a.url, timeout=10) as browser:
            browser.get("/ui/sign-in")
            signed_in = browser.post(
                "/ui/sign-in",
                data={
                    "username": "alice",
                    "password": "a-long-password-1",
                    "next": "/ui/models",
                    "csrf_token": browser.cookies["mh_csrf"],
                },
            )
            assert signed_in.status_code == 303
            page = httpx.get(f"{b.url}/ui/models", cookies=browser.cookies, timeout=10)
        assert page.status_code == 200
        assert "adder" in page.text


def test_two_servers_started_together_on_a_fresh_database_both_run_with_one_admin_and_one_leader(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {
        "MODELHOST_DATABASE_URL": postgres_url,
        "MODELHOST_BUNDLE_STORE": str(tmp_path / "shared-bundles"),
    }
    servers = [Server(tmp_path / name, env) for name in ("a", "b")]
    failures: list[BaseException] = []

    def start(server: Server) -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, with the server's log
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failures == []
        leaders = [_health(server)["leader"] for server in servers]
        assert sorted(leaders) == [False, True]
        # Migrated once, one first admin: its key is in exactly one data directory.
        saved = [server.home / "credentials" for server in servers]
        assert sorted(path.exists() for path in saved) == [False, True]
        engine = sa.create_engine(postgres_url)
        try:
            with engine.connect() as conn:
                admins = conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
        finally:
            engine.dispose()
        assert admins == 1
    finally:
        for server in servers:
            server.stop()


def test_an_isolated_environment_is_resolved_once_and_both_servers_install_that_lock(
    tmp_path: Path, postgres_url: str
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("six\n")  # resolved to whatever is newest
    (project / "model.py").write_text(
        "import six\n\n\ndef versions():\n    return {'six': six.__version__}\n"
    )
    with _two_servers(tmp_path, postgres_url) as (a, b):
        client = a.client()
        published = client.publish(project / "model.py:versions", name="pinned-by-a")
        assert published["environment"] == "isolated"

        def six_on(server: Server) -> str:
            answer = server.invoke("pinned-by-a", {"parameters": []})
            return str(answer.json()["result"]["six"]) if answer.status_code == 200 else ""

        on_a = wait_until(lambda: six_on(a), timeout=120)
        on_b = wait_until(lambda: six_on(b), timeout=120)
        assert on_a == on_b
        log = client.version("pinned-by-a", 1)["build_log"]
        assert log.count("Resolving requirements.txt") == 1, log
        assert f"six=={on_a}" in str(client.version("pinned-by-a", 1)["lock"])


def test_a_token_revoked_through_one_server_is_refused_by_the_other_within_a_second(
    tmp_path: Path, postgres_url: str
) -> None:
    # A long reconcile interval: only the change note can bring the revocation over in time.
    slow = {"MODELHOST_RECONCILE_INTERVAL_SECONDS": "30"}
    with _two_servers(tmp_path, postgres_url, slow) as (a, b):
        client = a.client()
        client.publish(PROJECTS / "calc", file="calc.py", function="add", name="guarded")
        client.set_access("guarded", invocation="token")
        token = client.create_token("guarded", "partner")
        secret = str(token["token"])

        def call_b() -> int:
            return httpx.post(
                f"{b.url}/models/guarded/latest/model",
                json={"data": {"x": 1, "y": 1}},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=10,
            ).status_code

        wait_until(lambda: call_b() == 200, timeout=60)

        client.revoke_token("guarded", str(token["id"]))

        wait_until(lambda: call_b() == 401, timeout=1.0, interval=0.02)

        # The access mode, the same way: public again, B answers without a token.
        client.set_access("guarded", invocation="public")
        wait_until(
            lambda: b.invoke("guarded", {"data": {"x": 1, "y": 1}}).status_code == 200,
            timeout=1.0,
            interval=0.02,
        )
        # And a label: set through A, B answers on it.
        client.set_routing("guarded", "advanced")
        client.set_label("guarded", "blue", 1)
        wait_until(
            lambda: (
                b.invoke("guarded", {"data": {"x": 1, "y": 1}}, route="labels/blue").status_code
                == 200
            ),
            timeout=1.0,
            interval=0.02,
        )


def _tick_indexes(runs: list[dict[str, object]], first_tick: dt.datetime, every: int) -> list[int]:
    """Which tick of the schedule each run was recorded for: the one at or before its time."""
    indexes = []
    for run in runs:
        created = dt.datetime.fromisoformat(str(run["created_at"]))
        indexes.append(int((created - first_tick).total_seconds() // every))
    return indexes


def test_a_schedule_fires_once_per_tick_across_servers_and_across_a_leader_change(
    tmp_path: Path, postgres_url: str
) -> None:
    every = 2
    env = {"MODELHOST_SCHEDULE_MIN_INTERVAL_SECONDS": "1"}
    with _two_servers(tmp_path, postgres_url, env) as (a, b), _as_admin(a, b) as on_b:
        # created through the follower; the leader fires it
        schedule = on_b.create_schedule(PROJECTS / "calc", ["python", "-c", "pass"], every="2s")
        first_tick = dt.datetime.fromisoformat(str(on_b.schedule(schedule["id"])["next_run_at"]))

        def runs() -> list[dict[str, object]]:
            return [dict(r) for r in on_b.runs(schedule=schedule["id"], limit=500)]

        wait_until(lambda: len(runs()) >= 4, timeout=30)

        # The leader is killed outright; the other leads within 5 s and fires from then on.
        assert a.process is not None
        serving = a.serving_pid
        a.process.kill()
        os.kill(serving, signal.SIGKILL)
        a.process.wait()
        wait_until(lambda: _health(b)["leader"] is True, timeout=5, interval=0.05)
        before = len(runs())
        wait_until(lambda: len(runs()) >= before + 3, timeout=30)

        fired = runs()
        indexes = _tick_indexes(fired, first_tick, every)
        assert len(indexes) == len(set(indexes)), sorted(indexes)
        on_b.pause_schedule(schedule["id"])


class SpreadingClient:
    """Threads calling a model on two servers in turn; a call that fails to connect or gets a
    503 is tried once more on the other server, as a client behind a load balancer would be."""

    def __init__(self, urls: list[str], path: str, threads: int = 4) -> None:
        self.urls = urls
        self.path = path
        self.ok = 0
        self.lost: list[str] = []
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                first = next(self._turn) % len(self.urls)
                outcome = ""
                for attempt in range(2):
                    url = self.urls[(first + attempt) % len(self.urls)] + self.path
                    try:
                        response = http.post(url, json={"data": {"x": 1, "y": 2}})
                    except httpx.TransportError as exc:
                        outcome = repr(exc)
                        continue
                    if response.status_code == 200 and response.json()["result"] == 3:
                        outcome = ""
                        break
                    outcome = f"{response.status_code} {response.text}"
                    if response.status_code != 503:
                        break
                if outcome:
                    self.lost.append(outcome)
                else:
                    self.ok += 1

    def __enter__(self) -> SpreadingClient:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_killing_one_of_two_servers_under_load_loses_no_call_and_it_rejoins_without_duplicates(
    tmp_path: Path, postgres_url: str
) -> None:
    with _two_servers(tmp_path, postgres_url) as (a, b):
        a.client().publish(PROJECTS / "calc", file="calc.py", function="add", name="steady")
        for server in (a, b):
            wait_until(
                lambda s=server: s.invoke("steady", {"data": {"x": 1, "y": 2}}).status_code == 200,
                timeout=60,
            )

        with SpreadingClient([a.url, b.url], "/models/steady/latest/model") as load:
            wait_until(lambda: load.ok >= 200, timeout=60, interval=0.01)
            assert a.process is not None
            serving = a.serving_pid
            a.process.kill()  # the whole server: its arbiter and its serving process
            os.kill(serving, signal.SIGKILL)
            a.process.wait()
            wait_until(lambda: _health(b)["leader"] is True, timeout=5, interval=0.05)
            served = load.ok
            wait_until(lambda: load.ok >= served + 200, timeout=60, interval=0.01)
        assert load.lost == []

        # Started again on its data directory, it rejoins as a follower and runs one instance
        # again; the other keeps its one.
        wait_until(lambda: not _workers_of(a.home), timeout=30)
        again = Server(a.home, {k: v for k, v in a.env.items() if k != "MODELHOST_PORT"})
        again.start()
        try:
            assert _health(again)["leader"] is False
            wait_until(
                lambda: again.invoke("steady", {"data": {"x": 1, "y": 2}}).status_code == 200,
                timeout=60,
            )
            assert len(_workers_of(again.home)) == 1
            assert len(_workers_of(b.home)) == 1
            with _as_admin(a, again) as on_again:
                assert len(on_again.instances("steady")) == 1
        finally:
            again.stop()

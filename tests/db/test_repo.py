"""The repository on SQLite and on the real PostgreSQL server, through Alembic migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from modelhost.db.engine import make_engine, migrate
from modelhost.db.repo import Repo


@pytest.fixture
def repo(database_url: str) -> Iterator[Repo]:
    engine = make_engine(database_url)
    migrate(engine)
    yield Repo(engine)
    engine.dispose()


def _version(repo: Repo, model_id: str, author: str) -> dict[str, object]:
    return {
        "bundle_sha256": "0" * 64,
        "bundle_bytes": 1,
        "bundle_files": 1,
        "file": "p.py",
        "function": "f",
        "environment": "server",
        "description": "",
        "author_id": author,
        "build_log": "",
    }


def test_migrations_create_every_table_and_running_them_again_changes_nothing(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"users", "api_keys", "models", "versions", "alembic_version"} <= tables
    engine.dispose()


def test_versions_are_numbered_one_two_three_per_model(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False)
    a = repo.create_model("a", owner_id=user.id, description="", instance_count=1)
    b = repo.create_model("b", owner_id=user.id, description="", instance_count=1)
    numbers = [repo.create_version(a.id, **_version(repo, a.id, user.id)).number for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert repo.create_version(b.id, **_version(repo, b.id, user.id)).number == 1


def test_concurrent_publishes_never_share_a_version_number(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False)
    model = repo.create_model("race", owner_id=user.id, description="", instance_count=1)
    numbers: list[int] = []

    def publish() -> None:
        for _ in range(5):
            numbers.append(
                repo.create_version(model.id, **_version(repo, model.id, user.id)).number
            )

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 21))


def test_a_build_outcome_is_recorded_once(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False)
    model = repo.create_model("m", owner_id=user.id, description="", instance_count=1)
    version = repo.create_version(model.id, **_version(repo, model.id, user.id))
    assert repo.finish_build(version.id, status="ready", log="ok", signature="f(x)")
    assert not repo.finish_build(version.id, status="failed", log="late")
    stored = repo.get_version(model.id, 1)
    assert stored is not None
    assert (stored.status, stored.build_log, stored.signature) == ("ready", "ok", "f(x)")
    assert stored.finished_at is not None
    assert stored.finished_at.tzinfo is not None


def test_models_are_found_by_id_or_name_and_created_once(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False)
    model, created = repo.get_or_create_model(
        "m", owner_id=user.id, description="d", instance_count=1
    )
    again, created_again = repo.get_or_create_model(
        "m", owner_id=user.id, description="x", instance_count=1
    )
    assert (created, created_again) == (True, False)
    assert again.id == model.id
    assert repo.find_model(model.id) == repo.find_model("m")
    assert repo.find_model("missing") is None


def test_api_keys_are_found_by_hash_and_ignored_once_revoked(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=True)
    key_id = repo.add_api_key(user.id, "laptop", "h" * 64, "mh_abcd")
    assert repo.user_for_key_hash("h" * 64) == user
    from modelhost.db import tables as t
    from modelhost.db.repo import utcnow

    with repo.engine.begin() as conn:
        conn.execute(
            sa.update(t.api_keys).where(t.api_keys.c.id == key_id).values(revoked_at=utcnow())
        )
    assert repo.user_for_key_hash("h" * 64) is None

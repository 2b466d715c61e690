"""The repository on SQLite and on the real PostgreSQL server, through Alembic migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from modelhost.db.engine import make_engine, migrate
from modelhost.db.repo import BuildFailure, Repo, utcnow


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


def test_a_failed_build_keeps_its_failure_as_data(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False)
    model = repo.create_model("m", owner_id=user.id, description="", instance_count=1)
    ok = repo.create_version(model.id, **_version(repo, model.id, user.id))
    failed = repo.create_version(model.id, **_version(repo, model.id, user.id))
    failure = BuildFailure("load", "Importing 'p.py' raised ImportError: no", "Traceback …")
    assert repo.finish_build(ok.id, status="ready", log="ok")
    assert repo.finish_build(failed.id, status="failed", log="Failed:\n…", failure=failure)
    assert repo.get_version(model.id, 1).failure is None  # type: ignore[union-attr]
    assert repo.get_version(model.id, 2).failure == failure  # type: ignore[union-attr]
    columns = {c["name"] for c in sa.inspect(repo.engine).get_columns("versions")}
    assert {"failure_kind", "failure_message", "failure_traceback"} <= columns


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


def test_a_shared_transaction_commits_everything_or_nothing(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False)
    model = repo.create_model("tx", owner_id=user.id, description="", instance_count=1)

    def fail_halfway() -> None:
        with repo.transaction():
            repo.update_model(model.id, description="changed")
            repo.add_audit(
                actor_id=user.id, actor="ana", action="settings-change", outcome="success"
            )
            raise RuntimeError("the audit write failed")

    with pytest.raises(RuntimeError):
        fail_halfway()
    found = repo.find_model("tx")
    assert found is not None
    assert found.description == ""
    assert repo.audit_events(model_id=model.id) == []
    with repo.transaction():
        repo.update_model(model.id, description="changed")
        repo.add_audit(
            actor_id=user.id,
            actor="ana",
            action="settings-change",
            model_id=model.id,
            outcome="success",
        )
    assert repo.find_model("tx").description == "changed"  # type: ignore[union-attr]
    assert [e.action for e in repo.audit_events(model_id=model.id)] == ["settings-change"]


def test_a_concurrent_publish_inside_a_transaction_reuses_the_model(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False)
    _, created = repo.get_or_create_model(
        "same", owner_id=user.id, description="", instance_count=1
    )
    with repo.transaction():
        again, created_again = repo.get_or_create_model(
            "same", owner_id=user.id, description="", instance_count=1
        )
        version = repo.create_version(again.id, **_version(repo, again.id, user.id))
    assert (created, created_again) == (True, False)
    assert version.number == 1


def test_tokens_collaborators_and_audit_queries(repo: Repo) -> None:
    owner = repo.create_user("owner", is_admin=False)
    other = repo.create_user("other", is_admin=False)
    model = repo.create_model("m", owner_id=owner.id, description="", instance_count=1)
    token = repo.add_token(model.id, "billing", "a" * 64, "mht_abcd", owner.id)
    assert [t.name for t in repo.list_tokens(model.id, active=True)] == ["billing"]
    assert repo.update_token(model.id, token.id, revoked_at=utcnow())
    assert repo.list_tokens(model.id, active=True) == []
    assert not repo.update_token(model.id, token.id, token_hash="b" * 64)

    repo.set_collaborator(model.id, other.id, "viewer")
    repo.set_collaborator(model.id, other.id, "editor")
    assert repo.collaborators(model.id) == {other.id: "editor"}
    assert repo.roles_of(other.id) == {model.id: "editor"}

    for action in ("publish", "deploy", "publish"):
        repo.add_audit(
            actor_id=owner.id,
            actor="owner",
            action=action,
            model_id=model.id,
            model="m",
            outcome="success",
        )
    assert [e.action for e in repo.audit_events(model_id=model.id)] == [
        "publish",
        "deploy",
        "publish",
    ][::-1]
    assert len(repo.audit_events(action="publish")) == 2
    assert repo.audit_events(actor="nobody") == []
    repo.delete_model(model.id)
    assert len(repo.audit_events(model_id=model.id)) == 3  # the audit log outlives the model


def test_disabled_users_and_expired_keys_do_not_authenticate(repo: Repo) -> None:
    import datetime as dt

    user = repo.create_user("ana", is_admin=False)
    repo.add_api_key(user.id, "old", "o" * 64, "mh_o", utcnow() - dt.timedelta(seconds=1))
    repo.add_api_key(user.id, "new", "n" * 64, "mh_n", utcnow() + dt.timedelta(days=1))
    assert repo.user_for_key_hash("o" * 64) is None
    assert repo.user_for_key_hash("n" * 64) == repo.get_user(user.id)
    repo.update_user(user.id, disabled_at=utcnow())
    assert repo.user_for_key_hash("n" * 64) is None

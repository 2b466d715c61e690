"""Named environments and the build log in the repository, on SQLite and on PostgreSQL."""

from __future__ import annotations

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


def _revision(repo: Repo, name: str, lock: str, user: str) -> int:
    return repo.add_environment_revision(
        name,
        requirements=lock,
        lock=lock,
        interpreter="/usr/bin/python3",
        python_version="3.11.7",
        created_by=user,
    ).revision


def test_the_migration_adds_the_environments_table_and_the_version_columns(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    inspector = sa.inspect(engine)
    assert "environments" in inspector.get_table_names()
    columns = {c["name"] for c in inspector.get_columns("versions")}
    assert {"environment_lock", "environment_hash", "git_commit", "source"} <= columns
    engine.dispose()


def test_revisions_of_a_named_environment_count_up_per_name(repo: Repo) -> None:
    user = repo.create_user("ana", is_admin=False).id
    assert [_revision(repo, "a", f"six=={n}\n", user) for n in (1, 2, 3)] == [1, 2, 3]
    assert _revision(repo, "b", "idna\n", user) == 1
    assert repo.get_environment("a") is not None
    assert repo.get_environment("a").lock == "six==3\n"  # type: ignore[union-attr]
    assert repo.get_environment("a", 1).lock == "six==1\n"  # type: ignore[union-attr]
    assert repo.get_environment("a", 9) is None
    assert repo.get_environment("missing") is None
    assert [(e.name, e.revision) for e in repo.list_environments()] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
    ]


def test_the_build_log_grows_in_the_database_and_used_environments_are_known(
    repo: Repo,
) -> None:
    user = repo.create_user("ana", is_admin=False)
    model = repo.create_model("m", owner_id=user.id, description="", instance_count=1)
    version = repo.create_version(
        model.id,
        bundle_sha256="0" * 64,
        bundle_bytes=1,
        bundle_files=1,
        file="p.py",
        function="f",
        environment="isolated",
        description="",
        author_id=user.id,
        build_log="first\n",
    )
    repo.append_build_log(version.id, "second\n")
    repo.append_build_log(version.id, "third\n")
    assert repo.get_version_by_id(version.id).build_log == "first\nsecond\nthird\n"  # type: ignore[union-attr]
    assert repo.environment_hashes_in_use() == set()
    repo.update_version(version.id, environment_hash="a" * 64, environment_lock="six==1\n")
    assert repo.environment_hashes_in_use() == {"a" * 64}
    assert repo.get_version_by_id(version.id).isolated  # type: ignore[union-attr]

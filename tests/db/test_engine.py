"""A database the server cannot use stops it with one message that names the setting."""

from __future__ import annotations

import pytest

from modelhost import errors
from modelhost.db.engine import make_engine, migrate
from tests.helpers import POSTGRES_URL


def test_a_database_url_with_an_unknown_driver_names_the_setting() -> None:
    with pytest.raises(errors.InvalidSetting) as refused:
        make_engine("bogus://x")
    assert "database_url" in refused.value.message
    assert "postgresql+psycopg://" in refused.value.message


def test_a_database_url_that_is_not_a_url_names_the_setting() -> None:
    with pytest.raises(errors.InvalidSetting, match="database_url"):
        make_engine("not a url")


def test_a_database_that_cannot_be_reached_says_so_without_the_password() -> None:
    url = POSTGRES_URL.format(database="modelhost_no_such_db").replace(
        "postgres@", "postgres:s3cret@"
    )
    engine = make_engine(url)
    with pytest.raises(errors.Unavailable) as refused:
        migrate(engine)
    engine.dispose()
    message = refused.value.message
    assert message.startswith("Cannot use the database at postgresql+psycopg://postgres:***@")
    assert "modelhost_no_such_db" in message
    assert "s3cret" not in message
    assert "database_url" in message

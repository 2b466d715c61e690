"""Signing in with a password: an unknown user costs a password check like a known one, and
failures are throttled per source address and user name together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost import errors
from modelhost.app import ModelhostApp, create_app
from modelhost.operations import access_control
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend

PASSWORD = "correct horse battery"


class CountingHasher:
    """The real hasher, counting the hashes each sign-in verifies against."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.verified: list[str] = []

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash)
        return bool(self.real.verify(password_hash, password))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModelhostApp]:
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    application = create_app(settings, backend=FakeBackend())
    bootstrap_admin(application.services.repo, tmp_path, settings.url)
    admin = application.services.repo.find_user("admin")
    assert admin is not None
    for name in ("alice", "bob", "carol"):
        access_control.add_user(application.services, admin, name, PASSWORD, is_admin=False)
    yield application
    application.services.repo.engine.dispose()


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    counting = CountingHasher(access_control._hasher)
    monkeypatch.setattr(access_control, "_hasher", counting)
    return counting


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(access_control, "LOGIN_THROTTLE", access_control.Throttle(clock=fake))
    return fake


def _login(app: ModelhostApp, user: str, password: str, source: str = "192.0.2.1") -> str:
    return access_control.login(app.services, user, password, source, "test")


@pytest.mark.usefixtures("clock")
def test_an_unknown_user_is_checked_against_a_password_hash_like_a_known_one(
    app: ModelhostApp, hasher: CountingHasher
) -> None:
    with pytest.raises(errors.Unauthenticated):
        _login(app, "alice", "wrong password")
    with pytest.raises(errors.Unauthenticated):
        _login(app, "nobody-here", "wrong password")
    assert len(hasher.verified) == 2
    assert all(h.startswith("$argon2") for h in hasher.verified)


@pytest.mark.usefixtures("clock")
def test_a_disabled_user_is_refused_after_a_password_check_even_with_the_right_password(
    app: ModelhostApp, hasher: CountingHasher
) -> None:
    admin = app.services.repo.find_user("admin")
    assert admin is not None
    access_control.disable_user(app.services, admin, "bob")
    with pytest.raises(errors.Unauthenticated, match="user name or password is wrong"):
        _login(app, "bob", PASSWORD)
    assert len(hasher.verified) == 1


@pytest.mark.usefixtures("clock")
def test_an_account_without_a_password_is_refused_after_a_password_check(
    app: ModelhostApp, hasher: CountingHasher
) -> None:
    with pytest.raises(errors.Unauthenticated):
        _login(app, "admin", "")  # the first admin signs in with its API key only
    assert len(hasher.verified) == 1


def test_failures_for_one_user_from_one_address_do_not_lock_out_others(
    app: ModelhostApp, clock: FakeClock
) -> None:
    for _ in range(5):
        with pytest.raises(errors.Unauthenticated):
            _login(app, "alice", "wrong password", "198.51.100.7")
    with pytest.raises(errors.TooManyRequests, match=r"as alice from 198\.51\.100\.7"):
        _login(app, "alice", PASSWORD, "198.51.100.7")
    assert _login(app, "alice", PASSWORD, "192.0.2.1").startswith("mh_")
    assert _login(app, "carol", PASSWORD, "198.51.100.7").startswith("mh_")


def test_a_throttled_sign_in_is_allowed_again_after_the_window(
    app: ModelhostApp, clock: FakeClock
) -> None:
    for _ in range(5):
        with pytest.raises(errors.Unauthenticated):
            _login(app, "alice", "wrong password")
    with pytest.raises(errors.TooManyRequests):
        _login(app, "alice", PASSWORD)
    clock.now += 61
    assert _login(app, "alice", PASSWORD).startswith("mh_")


def test_the_user_name_is_one_key_whatever_its_case(app: ModelhostApp, clock: FakeClock) -> None:
    for name in ("Alice", "ALICE", "alice ", "alice", "aLice"):
        with pytest.raises(errors.Unauthenticated):
            _login(app, name, "wrong password")
    with pytest.raises(errors.TooManyRequests):
        _login(app, "alice", PASSWORD)

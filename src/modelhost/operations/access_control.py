"""Access control: the authorize checks, users and passwords, sign-in and its throttle, API keys,
model access tokens, collaborators, visibility and ownership."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from modelhost import errors, token_limits
from modelhost.db.repo import Model, Token, User, utcnow
from modelhost.events import LOGIN, LOGOUT, Action
from modelhost.operations import Services, credentials, iso
from modelhost.operations.audit import record
from modelhost.permissions import (
    ROLES,
    can_see,
    ensure_admin,
    ensure_permission,
    highest,
    role_of,
)

TOKEN_PREFIX = "mht_"  # noqa: S105 - a prefix that lets scanners spot leaked tokens
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


# --------------------------------------------------------------------------- authorization


def authorize(
    services: Services, user: User, key: str, action: str, *, audit_as: Action | None = None
) -> Model:
    """The model ``key`` names, if ``user`` may do ``action`` (a permission) on it; the one
    check.

    ``audit_as`` is the management action being attempted: a refusal is then recorded in the
    audit log under its name, as its success would be.
    """
    model = services.repo.find_model(key)
    if model is None:
        if audit_as:
            record(
                services,
                user,
                audit_as,
                model_name=key,
                outcome="failed",
                detail={"error": "no such model"},
            )
        raise errors.ModelNotFound(
            f"There is no model '{key}'. 'modelhost models list' shows the models."
        )
    role = role_of(user, model, roles_on(services, model))
    try:
        ensure_permission(user, action, model, role)
    except (errors.Forbidden, errors.ModelNotFound) as exc:
        if audit_as:
            record(
                services,
                user,
                audit_as,
                model=model,
                outcome="denied",
                detail={"error": exc.message, "needs": action},
            )
        raise
    return model


def authorize_action(services: Services, user: User, key: str, action: Action) -> Model:
    """The model ``key`` names, if ``user`` may do the management ``action`` on it (the
    permission the action table gives it); a refusal is recorded in the audit log."""
    assert action.permission is not None, f"{action.name} is not an action on a model"
    return authorize(services, user, key, action.permission, audit_as=action)


def roles_on(services: Services, model: Model) -> dict[str, str]:
    """user id -> role on ``model``: the highest of the user's own role and their groups'."""
    roles = dict(services.repo.collaborators(model.id))
    for user_id, role in services.repo.member_roles(model.id):
        roles[user_id] = highest(roles.get(user_id), role) or role
    return roles


def roles_of(services: Services, user: User) -> dict[str, str]:
    """model id -> ``user``'s role on it, their own or through a group (the highest)."""
    roles = dict(services.repo.roles_of(user.id))
    for model_id, role in services.repo.member_roles_of(user.id):
        roles[model_id] = highest(roles.get(model_id), role) or role
    return roles


def visible_models(services: Services, user: User) -> list[Model]:
    roles = roles_of(services, user)
    return [
        m
        for m in services.repo.list_models()
        if can_see(user, m, "owner" if m.owner_id == user.id else roles.get(m.id))
    ]


# --------------------------------------------------------------------------- users


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "disabled": user.disabled_at is not None,
        "created_at": iso(user.created_at),
    }


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise errors.BadRequest(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")


def add_user(
    services: Services, actor: User, username: str, password: str, *, is_admin: bool
) -> User:
    ensure_admin(actor, "add users")
    if not USERNAME_PATTERN.match(username):
        raise errors.BadRequest(
            f"'{username}' is not a valid user name: 2 to 63 lowercase letters, digits, '.', "
            "'_' or '-'."
        )
    _check_password(password)
    if services.repo.find_user(username):
        raise errors.Conflict(f"There is already a user named '{username}'.")
    return services.repo.create_user(
        username, is_admin=is_admin, password_hash=_hasher.hash(password)
    )


def find_user(services: Services, username: str) -> User:
    user = services.repo.find_user(username)
    if user is None:
        raise errors.NotFound(f"There is no user '{username}'. 'modelhost users list' shows them.")
    return user


def disable_user(services: Services, actor: User, username: str) -> User:
    ensure_admin(actor, "disable users")
    user = find_user(services, username)
    if user.id == actor.id:
        raise errors.BadRequest("You cannot disable your own account.")
    services.repo.update_user(user.id, disabled_at=utcnow())
    return user


class Throttle:
    """Counts failures per key; past ``limit`` in ``window`` seconds, refuses that key.

    Sign-in keys it by source address and user name together, so an attacker who fails for
    one account (or many) locks out only their own attempts at it, never its owner elsewhere.
    ``clock`` (seconds, monotonic) is for tests."""

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[Hashable, list[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: Hashable, who: str) -> None:
        """TooManyRequests, naming ``who`` (what ``key`` stands for), past the limit."""
        with self._lock:
            since = self.clock() - self.window
            recent = [t for t in self._failures.get(key, []) if t > since]
            if recent:
                self._failures[key] = recent
            else:
                self._failures.pop(key, None)
        if len(recent) >= self.limit:
            raise errors.TooManyRequests(
                f"Too many failed attempts {who}; wait {self.window:g} s and try again.",
                headers={"Retry-After": str(int(self.window))},
            )

    def failed(self, key: Hashable) -> None:
        with self._lock:
            self._failures.setdefault(key, []).append(self.clock())


LOGIN_THROTTLE = Throttle()


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, checked when the user is unknown, disabled or has no
    password, so that a wrong user name takes as long as a wrong password."""
    return _hasher.hash(secrets.token_urlsafe(32))


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def login(
    services: Services,
    username: str,
    password: str,
    source: str,
    key_name: str,
    *,
    expires_in_days: int | None = None,
) -> str:
    """Check a password and return a new API key for the user; failures are throttled.

    The password is checked against an argon2 hash whether or not the user exists, so the
    answer takes as long for an unknown user as for a wrong password."""
    throttle_key = ("password", source, username.strip().lower())
    LOGIN_THROTTLE.check(throttle_key, f"to sign in as {username} from {source}")
    user = services.repo.find_user(username)
    usable = user is not None and user.disabled_at is None
    valid = _verify(user.password_hash if usable and user is not None else None, password)
    if not valid:
        LOGIN_THROTTLE.failed(throttle_key)
        record(services, None, LOGIN, outcome="denied", actor_name=username)
        raise errors.Unauthenticated("The user name or password is wrong.")
    assert user is not None
    key = create_api_key(services, user, key_name, expires_in_days)
    record(services, user, LOGIN)
    return key


def login_with_key(
    services: Services, api_key: str, source: str, key_name: str, *, expires_in_days: int
) -> str:
    """Exchange a valid API key for a new, expiring one (the web UI's sign-in for accounts
    without a password, such as the first admin); failures are throttled like passwords."""
    throttle_key = ("api key", source)
    LOGIN_THROTTLE.check(throttle_key, f"to sign in with an API key from {source}")
    try:
        user = credentials.authenticate(services.repo, api_key)
    except errors.Unauthenticated:
        LOGIN_THROTTLE.failed(throttle_key)
        record(services, None, LOGIN, outcome="denied", actor_name="(API key)")
        raise
    key = create_api_key(services, user, key_name, expires_in_days)
    record(services, user, LOGIN, detail={"with": "api key"})
    return key


def logout(services: Services, user: User, key: str) -> None:
    """Revoke the API key a session signed in with (the web UI's sign-out)."""
    digest = credentials.hash_key(key)
    for item in services.repo.list_api_keys(user.id):
        if item.key_hash == digest and item.revoked_at is None:
            services.repo.revoke_api_key(user.id, item.id)
            record(services, user, LOGOUT)


# --------------------------------------------------------------------------- API keys


def create_api_key(
    services: Services, user: User, name: str, expires_in_days: int | None = None
) -> str:
    expires = utcnow() + dt.timedelta(days=expires_in_days) if expires_in_days else None
    return credentials.create_api_key(services.repo, user, name, expires)


def list_api_keys(services: Services, user: User) -> list[dict[str, Any]]:
    return [
        {
            "id": k.id,
            "name": k.name,
            "prefix": k.prefix,
            "created_at": iso(k.created_at),
            "expires_at": iso(k.expires_at),
            "revoked": k.revoked_at is not None,
        }
        for k in services.repo.list_api_keys(user.id)
    ]


def revoke_api_key(services: Services, user: User, key_id: str) -> None:
    if not services.repo.revoke_api_key(user.id, key_id):
        raise errors.NotFound(f"You have no active API key with id '{key_id}'.")


# --------------------------------------------------------------------------- access tokens


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_view(
    token: Token,
    secret: str | None = None,
    *,
    live: tuple[int, int] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """A token as the API shows it: never its secret, except ``secret`` once at creation.
    With a quota, ``usage`` says the calls used in the current window (``live``: the gateway's
    counters, else what the database kept) and when it resets."""
    view: dict[str, Any] = {
        "id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": iso(token.created_at),
        "revoked": token.revoked_at is not None,
        "rate": token.rate_limit,
        "quota": token.quota,
        "usage": None,
    }
    quota = token_limits.quota_or_none(token.quota)
    if quota is not None:
        moment = time.time() if now is None else now
        window, resets_at = token_limits.window(quota.unit, moment)
        counted_in, used = live if live is not None else (token.quota_window, token.quota_used)
        view["usage"] = {
            "used": used if counted_in == window else 0,
            "limit": quota.count,
            "per": quota.unit,
            "resets_at": iso(dt.datetime.fromtimestamp(resets_at, dt.timezone.utc)),
        }
    if secret is not None:
        view["token"] = secret  # shown once
    return view


def _limits(rate: str | None, quota: str | None) -> dict[str, str | None]:
    """The stored form of a rate and a quota (checked; None or "none" for none)."""
    parsed_rate = token_limits.rate_or_none(rate)
    parsed_quota = token_limits.quota_or_none(quota)
    return {
        "rate_limit": None if parsed_rate is None else str(parsed_rate),
        "quota": None if parsed_quota is None else str(parsed_quota),
    }


def create_token(
    services: Services,
    actor: User,
    model: Model,
    name: str,
    *,
    rate: str | None = None,
    quota: str | None = None,
) -> dict[str, Any]:
    if not name.strip() or len(name) > 128:
        raise errors.BadRequest("Give the token a name saying who it is for (1-128 characters).")
    limits = _limits(rate, quota)
    secret = _new_token()
    token = services.repo.add_token(
        model.id,
        name.strip(),
        hash_token(secret),
        secret[: len(TOKEN_PREFIX) + 4],
        actor.id,
        **limits,
    )
    services.wake()
    return token_view(token, secret, now=services.clock().timestamp())


def list_tokens(services: Services, model: Model) -> list[dict[str, Any]]:
    now = services.clock().timestamp()
    return [
        token_view(t, live=services.routes.token_usage(t.id), now=now)
        for t in services.repo.list_tokens(model.id)
    ]


def update_token(
    services: Services,
    model: Model,
    key: str,
    *,
    rate: str | None = None,
    quota: str | None = None,
) -> tuple[Token, dict[str, Any]]:
    """Set the rate or quota (or both) of the token ``key`` names (its id, or its name when
    unique); ``None`` keeps one as it is, ``"none"`` removes it. Returns the token as it was and
    its new view. Usage counted in the current quota window is kept."""
    if rate is None and quota is None:
        raise errors.BadRequest(
            "Give a new rate or quota, or both, such as --rate 50/s or --quota 100000/day "
            "('none' removes one)."
        )
    token = find_token(services, model, key)
    values = _limits(
        token.rate_limit if rate is None else rate, token.quota if quota is None else quota
    )
    if not services.repo.update_token(model.id, token.id, **values):
        raise errors.NotFound(f"Model '{model.name}' has no active token '{key}'.")
    updated = next(t for t in services.repo.list_tokens(model.id) if t.id == token.id)
    now = services.clock().timestamp()
    return token, token_view(updated, live=services.routes.token_usage(token.id), now=now)


def find_token(services: Services, model: Model, key: str) -> Token:
    """The active token of ``model`` whose id is ``key``, or whose name is, when only one
    active token has that name."""
    active = services.repo.list_tokens(model.id, active=True)
    for token in active:
        if token.id == key:
            return token
    named = [token for token in active if token.name == key]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(token.id for token in named)
        raise errors.BadRequest(
            f"Model '{model.name}' has {len(named)} active tokens named '{key}'; give the id of "
            f"one ({ids}). 'modelhost tokens list {model.name}' shows them."
        )
    if any(
        token.revoked_at is not None and key in (token.id, token.name)
        for token in services.repo.list_tokens(model.id)
    ):
        raise errors.NotFound(
            f"Token '{key}' of model '{model.name}' was revoked; a revoked token cannot be used "
            f"or changed again. 'modelhost tokens create {model.name} --name NAME' makes a new "
            "one."
        )
    raise errors.NotFound(
        f"Model '{model.name}' has no active token with the id or name '{key}'. 'modelhost "
        f"tokens list {model.name}' shows them."
    )


def revoke_token(services: Services, model: Model, key: str) -> Token:
    """Revoke the token ``key`` names (its id, or its name when unique); returns it."""
    token = find_token(services, model, key)
    if not services.repo.update_token(model.id, token.id, revoked_at=utcnow()):
        raise errors.NotFound(f"Model '{model.name}' has no active token '{key}'.")
    services.wake()
    return token


def regenerate_token(services: Services, model: Model, key: str) -> dict[str, Any]:
    """A new secret for the same token (same id and name); the old secret stops working.
    ``key`` is the token's id, or its name when no other active token has it."""
    token_id = find_token(services, model, key).id
    secret = _new_token()
    changed = services.repo.update_token(
        model.id,
        token_id,
        token_hash=hash_token(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 4],
        created_at=utcnow(),
    )
    if not changed:
        raise errors.NotFound(f"Model '{model.name}' has no active token '{token_id}'.")
    services.wake()
    token = next(t for t in services.repo.list_tokens(model.id) if t.id == token_id)
    return token_view(token, secret)


# --------------------------------------------------------------------------- sharing


def set_access(
    services: Services, model: Model, *, visibility: str | None, invocation: str | None
) -> Model:
    changes: dict[str, str] = {}
    if visibility is not None:
        if visibility not in ("public", "private"):
            raise errors.BadRequest("Visibility is public or private.")
        changes["visibility"] = visibility
    if invocation is not None:
        if invocation not in ("public", "token"):
            raise errors.BadRequest("Invocation is public (no token) or token.")
        changes["invocation_mode"] = invocation
    if not changes:
        raise errors.BadRequest("Say what to change: visibility and/or invocation.")
    updated = services.repo.update_model(model.id, **changes)
    services.wake()
    return updated


def collaborators(services: Services, model: Model) -> list[dict[str, Any]]:
    roles = services.repo.collaborators(model.id)
    names = services.repo.usernames([model.owner_id, *roles])
    people = [{"user": names.get(model.owner_id), "role": "owner"}]
    people += [{"user": names.get(uid), "role": role} for uid, role in sorted(roles.items())]
    return people


def set_collaborator(services: Services, model: Model, username: str, role: str) -> None:
    if role not in ROLES or role == "owner":
        raise errors.BadRequest(
            "A collaborator's role is viewer or editor; ownership moves with 'transfer'."
        )
    user = find_user(services, username)
    if user.id == model.owner_id:
        raise errors.BadRequest(f"'{username}' owns '{model.name}' already.")
    services.repo.set_collaborator(model.id, user.id, role)


def remove_collaborator(services: Services, model: Model, username: str) -> None:
    user = find_user(services, username)
    if not services.repo.remove_collaborator(model.id, user.id):
        raise errors.NotFound(f"'{username}' is not a collaborator on '{model.name}'.")


def transfer(services: Services, model: Model, username: str) -> Model:
    """Make ``username`` the owner; the previous owner stays on as editor."""
    user = find_user(services, username)
    if user.disabled_at is not None:
        raise errors.BadRequest(f"'{username}' is disabled and cannot own models.")
    if user.id == model.owner_id:
        raise errors.BadRequest(f"'{username}' owns '{model.name}' already.")
    services.repo.remove_collaborator(model.id, user.id)
    services.repo.set_collaborator(model.id, model.owner_id, "editor")
    return services.repo.update_model(model.id, owner_id=user.id)

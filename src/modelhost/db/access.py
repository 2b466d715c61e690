"""Queries for who may do what: users, API keys, model access tokens, collaborators, audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from modelhost.db import tables as t
from modelhost.db.base import Store, _aware, _row, new_id, utcnow


@dataclass(frozen=True)
class User:
    id: str
    username: str
    is_admin: bool
    created_at: dt.datetime
    password_hash: str | None = None
    disabled_at: dt.datetime | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    key_hash: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class Token:
    id: str
    model_id: str
    name: str
    token_hash: str
    prefix: str
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    #: calls per unit, such as "50/s" (None: no rate limit)
    rate_limit: str | None = None
    #: calls per UTC day or month, such as "100000/day" (None: no quota)
    quota: str | None = None
    #: the quota window the usage below counts in (:func:`modelhost.token_limits.window`)
    quota_window: int = 0
    #: calls used in that window, as last written from the gateway's counters
    quota_used: int = 0


@dataclass(frozen=True)
class AuditEvent:
    id: int
    time: dt.datetime
    actor_id: str | None
    actor: str
    action: str
    model_id: str | None
    model: str | None
    version: int | None
    source_ip: str | None
    outcome: str
    request_id: str | None
    detail: str


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    created_at: dt.datetime


class AccessRepo(Store):
    # ------------------------------------------------------------------ users

    def count_users(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.users)).scalar_one())

    def create_user(
        self, username: str, *, is_admin: bool, password_hash: str | None = None
    ) -> User:
        user = User(new_id(), username, is_admin, utcnow(), password_hash)
        with self._begin() as conn:
            conn.execute(insert(t.users).values(**user.__dict__))
        return user

    def list_users(self) -> list[User]:
        with self._connect() as conn:
            rows = conn.execute(select(t.users).order_by(t.users.c.username)).all()
        return [_row(User, r) for r in rows]

    def get_user(self, user_id: str) -> User | None:
        with self._connect() as conn:
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).first()
        return _row(User, row) if row else None

    def find_user(self, username: str) -> User | None:
        with self._connect() as conn:
            row = conn.execute(select(t.users).where(t.users.c.username == username)).first()
        return _row(User, row) if row else None

    def update_user(self, user_id: str, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(update(t.users).where(t.users.c.id == user_id).values(**values))

    def usernames(self, user_ids: Sequence[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        query = select(t.users.c.id, t.users.c.username).where(t.users.c.id.in_(set(user_ids)))
        with self._connect() as conn:
            return {row.id: row.username for row in conn.execute(query)}

    # ------------------------------------------------------------------ API keys

    def add_api_key(
        self,
        user_id: str,
        name: str,
        key_hash: str,
        prefix: str,
        expires_at: dt.datetime | None = None,
    ) -> str:
        key_id = new_id()
        with self._begin() as conn:
            conn.execute(
                insert(t.api_keys).values(
                    id=key_id,
                    user_id=user_id,
                    name=name,
                    key_hash=key_hash,
                    prefix=prefix,
                    created_at=utcnow(),
                    expires_at=expires_at,
                )
            )
        return key_id

    def user_for_key_hash(self, key_hash: str) -> User | None:
        """The enabled user owning an unrevoked, unexpired key with this hash."""
        query = select(t.api_keys.c.user_id, t.api_keys.c.expires_at).where(
            t.api_keys.c.key_hash == key_hash, t.api_keys.c.revoked_at.is_(None)
        )
        with self._connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        expires = _aware(row.expires_at)
        if expires is not None and expires <= utcnow():
            return None
        user = self.get_user(row.user_id)
        return user if user is not None and user.disabled_at is None else None

    def list_api_keys(self, user_id: str) -> list[ApiKey]:
        query = (
            select(t.api_keys)
            .where(t.api_keys.c.user_id == user_id)
            .order_by(t.api_keys.c.created_at)
        )
        with self._connect() as conn:
            return [_row(ApiKey, r) for r in conn.execute(query)]

    def revoke_api_key(self, user_id: str, key_id: str) -> bool:
        query = (
            update(t.api_keys)
            .where(
                t.api_keys.c.id == key_id,
                t.api_keys.c.user_id == user_id,
                t.api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    # ------------------------------------------------------------------ model access tokens

    def add_token(
        self,
        model_id: str,
        name: str,
        token_hash: str,
        prefix: str,
        created_by: str,
        *,
        rate_limit: str | None = None,
        quota: str | None = None,
    ) -> Token:
        token = Token(
            new_id(),
            model_id,
            name,
            token_hash,
            prefix,
            created_by,
            utcnow(),
            None,
            rate_limit=rate_limit,
            quota=quota,
        )
        with self._begin() as conn:
            conn.execute(insert(t.model_tokens).values(**token.__dict__))
        return token

    def list_tokens(self, model_id: str | None = None, *, active: bool = False) -> list[Token]:
        query = select(t.model_tokens).order_by(t.model_tokens.c.created_at)
        if model_id is not None:
            query = query.where(t.model_tokens.c.model_id == model_id)
        if active:
            query = query.where(t.model_tokens.c.revoked_at.is_(None))
        with self._connect() as conn:
            return [_row(Token, r) for r in conn.execute(query)]

    def update_token(self, model_id: str, token_id: str, **values: Any) -> bool:
        query = (
            update(t.model_tokens)
            .where(
                t.model_tokens.c.id == token_id,
                t.model_tokens.c.model_id == model_id,
                t.model_tokens.c.revoked_at.is_(None),
            )
            .values(**values)
        )
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    def save_token_usage(self, usage: Sequence[tuple[str, int, int]]) -> None:
        """Write (token id, quota window, calls used) from the gateway's counters."""
        if not usage:
            return
        with self._begin() as conn:
            for token_id, window, used in usage:
                conn.execute(
                    update(t.model_tokens)
                    .where(t.model_tokens.c.id == token_id)
                    .values(quota_window=window, quota_used=used)
                )

    # ------------------------------------------------------------------ collaborators

    def set_collaborator(self, model_id: str, user_id: str, role: str) -> None:
        with self._begin() as conn:
            conn.execute(
                delete(t.collaborators).where(
                    t.collaborators.c.model_id == model_id, t.collaborators.c.user_id == user_id
                )
            )
            conn.execute(
                insert(t.collaborators).values(
                    model_id=model_id, user_id=user_id, role=role, created_at=utcnow()
                )
            )

    def remove_collaborator(self, model_id: str, user_id: str) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                delete(t.collaborators).where(
                    t.collaborators.c.model_id == model_id, t.collaborators.c.user_id == user_id
                )
            )
        return result.rowcount == 1

    def collaborators(self, model_id: str) -> dict[str, str]:
        """user id -> role for one model."""
        query = select(t.collaborators).where(t.collaborators.c.model_id == model_id)
        with self._connect() as conn:
            return {row.user_id: row.role for row in conn.execute(query)}

    def roles_of(self, user_id: str) -> dict[str, str]:
        """model id -> role for one user."""
        query = select(t.collaborators).where(t.collaborators.c.user_id == user_id)
        with self._connect() as conn:
            return {row.model_id: row.role for row in conn.execute(query)}

    # ------------------------------------------------------------------ groups

    def create_group(self, name: str) -> Group:
        group = Group(new_id(), name, utcnow())
        with self._begin() as conn:
            conn.execute(insert(t.groups).values(**group.__dict__))
        return group

    def find_group(self, name: str) -> Group | None:
        query = select(t.groups).where(t.groups.c.name == name)
        with self._connect() as conn:
            row = conn.execute(query).first()
        return _row(Group, row) if row else None

    def list_groups(self) -> list[Group]:
        with self._connect() as conn:
            return [
                _row(Group, r) for r in conn.execute(select(t.groups).order_by(t.groups.c.name))
            ]

    def delete_group(self, group_id: str) -> None:
        """The group, its members and its roles on models."""
        with self._begin() as conn:
            for table in (t.group_roles, t.group_members):
                conn.execute(delete(table).where(table.c.group_id == group_id))
            conn.execute(delete(t.groups).where(t.groups.c.id == group_id))

    def add_member(self, group_id: str, user_id: str) -> bool:
        """False when the user is a member already."""
        with self._begin() as conn:
            exists = conn.execute(
                select(t.group_members.c.user_id).where(
                    t.group_members.c.group_id == group_id, t.group_members.c.user_id == user_id
                )
            ).first()
            if exists:
                return False
            conn.execute(
                insert(t.group_members).values(
                    group_id=group_id, user_id=user_id, created_at=utcnow()
                )
            )
        return True

    def remove_member(self, group_id: str, user_id: str) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                delete(t.group_members).where(
                    t.group_members.c.group_id == group_id, t.group_members.c.user_id == user_id
                )
            )
        return result.rowcount == 1

    def members(self) -> dict[str, list[str]]:
        """group id -> the user ids of its members."""
        found: dict[str, list[str]] = {}
        with self._connect() as conn:
            for row in conn.execute(select(t.group_members)):
                found.setdefault(row.group_id, []).append(row.user_id)
        return found

    def set_group_role(self, model_id: str, group_id: str, role: str) -> None:
        with self._begin() as conn:
            conn.execute(
                delete(t.group_roles).where(
                    t.group_roles.c.model_id == model_id, t.group_roles.c.group_id == group_id
                )
            )
            conn.execute(
                insert(t.group_roles).values(
                    model_id=model_id, group_id=group_id, role=role, created_at=utcnow()
                )
            )

    def remove_group_role(self, model_id: str, group_id: str) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                delete(t.group_roles).where(
                    t.group_roles.c.model_id == model_id, t.group_roles.c.group_id == group_id
                )
            )
        return result.rowcount == 1

    def group_roles(self, model_id: str) -> dict[str, str]:
        """group id -> role for one model."""
        query = select(t.group_roles).where(t.group_roles.c.model_id == model_id)
        with self._connect() as conn:
            return {row.group_id: row.role for row in conn.execute(query)}

    def member_roles(self, model_id: str) -> list[tuple[str, str]]:
        """(user id, role) for each member of each group with a role on one model."""
        query = (
            select(t.group_members.c.user_id, t.group_roles.c.role)
            .join(t.group_roles, t.group_roles.c.group_id == t.group_members.c.group_id)
            .where(t.group_roles.c.model_id == model_id)
        )
        with self._connect() as conn:
            return [(row.user_id, row.role) for row in conn.execute(query)]

    def member_roles_of(self, user_id: str) -> list[tuple[str, str]]:
        """(model id, role) for each role one user holds through a group."""
        query = (
            select(t.group_roles.c.model_id, t.group_roles.c.role)
            .join(t.group_members, t.group_members.c.group_id == t.group_roles.c.group_id)
            .where(t.group_members.c.user_id == user_id)
        )
        with self._connect() as conn:
            return [(row.model_id, row.role) for row in conn.execute(query)]

    # ------------------------------------------------------------------ audit

    def add_audit(self, **values: Any) -> None:
        """Append one event; there is no update or delete."""
        with self._begin() as conn:
            conn.execute(insert(t.audit_events).values(time=utcnow(), **values))

    def audit_events(
        self,
        *,
        model_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        query = select(t.audit_events).order_by(t.audit_events.c.id.desc()).limit(limit)
        if model_id is not None:
            query = query.where(t.audit_events.c.model_id == model_id)
        if actor is not None:
            query = query.where(t.audit_events.c.actor == actor)
        if action is not None:
            query = query.where(t.audit_events.c.action == action)
        if since is not None:
            query = query.where(t.audit_events.c.time >= since)
        with self._connect() as conn:
            return [_row(AuditEvent, r) for r in conn.execute(query)]

"""The schema. Changes go through a new Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

models = Table(
    "models",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("owner_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("instance_count", Integer, nullable=False),
    Column("timeout_seconds", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model_id", String(32), ForeignKey("models.id"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("bundle_sha256", String(64), nullable=False),
    Column("bundle_bytes", BigInteger, nullable=False),
    Column("bundle_files", Integer, nullable=False),
    Column("file", String(512), nullable=False),
    Column("function", String(256), nullable=False),
    Column("environment", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("build_log", Text, nullable=False, default=""),
    Column("signature", String(1024), nullable=True),
    Column("description", Text, nullable=False, default=""),
    Column("author_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
)

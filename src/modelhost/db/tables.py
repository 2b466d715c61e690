"""The schema. Changes go through a new Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
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
    Column("password_hash", String(256), nullable=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
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
    Column("expires_at", DateTime(timezone=True), nullable=True),
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
    Column("routing_mode", String(16), nullable=False, default="basic"),
    Column("state", String(16), nullable=False, default="running"),
    Column("generation", Integer, nullable=False, default=0),
    Column("log_requests", Boolean, nullable=False, default=False),
    Column("deployed_version", Integer, nullable=True),
    Column("visibility", String(16), nullable=False, default="private"),
    Column("invocation_mode", String(16), nullable=False, default="token"),
    #: whether the model's code may reach the network from its sandbox
    Column("network", Boolean, nullable=False, default=True),
    #: prediction capture: whether it is on, and the share of successful calls it records
    Column("capture", Boolean, nullable=False, default=False),
    Column("capture_share", Float, nullable=False, default=1.0),
    #: the hardware tier its instances get (setting hardware_tiers), or none
    Column("tier", String(64), nullable=True),
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
    Column("desired_state", String(16), nullable=True),
    Column("concurrency", Integer, nullable=False, default=1),
    Column("health", String(16), nullable=False, default="ok"),
    Column("health_log", Text, nullable=False, default=""),
    Column("environment_revision", Integer, nullable=True),
    Column("environment_lock", Text, nullable=True),
    Column("environment_hash", String(64), nullable=True),
    Column("interpreter", String(1024), nullable=True),
    Column("python_version", String(32), nullable=True),
    Column("source", String(1024), nullable=True),
    Column("git_commit", String(64), nullable=True),
    #: why a failed version failed: kind, message and the user's traceback
    Column("failure_kind", String(16), nullable=True),
    Column("failure_message", Text, nullable=True),
    Column("failure_traceback", Text, nullable=True),
    #: the client's Idempotency-Key of the publish that made it: a retry finds it
    Column("idempotency_key", String(128), nullable=True),
    #: an example request body (JSON text with "data" or "parameters"), or None
    Column("example", Text, nullable=True),
    #: a batching function's largest batch (None: not a batching function) and longest wait
    Column("batch_max_size", Integer, nullable=True),
    Column("batch_max_wait_ms", Float, nullable=True),
    #: the function's parameters and result as JSON Schema (runtime/signatures.py), or None
    Column("signature_schema", Text, nullable=True),
    #: the R library directory of an R version's named environment, or None
    Column("r_library", String(1024), nullable=True),
    #: instances are forked from a process that imported the script (False: each starts fresh)
    Column("fork", Boolean, nullable=False, default=True),
    UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
    UniqueConstraint("model_id", "idempotency_key", name="uq_versions_model_idempotency_key"),
)

environments = Table(
    "environments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("requirements", Text, nullable=False),
    Column("lock", Text, nullable=False),
    Column("interpreter", String(1024), nullable=False),
    Column("python_version", String(32), nullable=False),
    Column("created_by", String(32), ForeignKey("users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    #: "python" (requirements and their lock) or "r" (a library directory an admin prepared)
    Column("kind", String(16), nullable=False, server_default="python"),
    Column("r_library", String(1024), nullable=True),
    UniqueConstraint("name", "revision", name="uq_environments_name_revision"),
)

labels = Table(
    "labels",
    metadata,
    Column("model_id", String(32), ForeignKey("models.id"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("canary_version", Integer, nullable=True),
    Column("canary_weight", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

env_vars = Table(
    "env_vars",
    metadata,
    Column("model_id", String(32), ForeignKey("models.id"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("secret", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

model_tokens = Table(
    "model_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model_id", String(32), ForeignKey("models.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_by", String(32), ForeignKey("users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # limits (issue 20): "50/s", "100000/day"; usage is written from the gateway's counters
    Column("rate_limit", String(32), nullable=True),
    Column("quota", String(32), nullable=True),
    Column("quota_window", BigInteger, nullable=False, server_default="0"),
    Column("quota_used", BigInteger, nullable=False, server_default="0"),
)

collaborators = Table(
    "collaborators",
    metadata,
    Column("model_id", String(32), ForeignKey("models.id"), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: named sets of users, which can hold a role on a model like a user can
groups = Table(
    "groups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(32), ForeignKey("groups.id"), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: a group's role on a model (its members hold it, unless they hold a higher one)
group_roles = Table(
    "group_roles",
    metadata,
    Column("model_id", String(32), ForeignKey("models.id"), primary_key=True),
    Column("group_id", String(32), ForeignKey("groups.id"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False, index=True),
    Column("actor_id", String(32), nullable=True),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False, index=True),
    Column("model_id", String(32), nullable=True, index=True),
    Column("model", String(64), nullable=True),
    Column("version", Integer, nullable=True),
    Column("source_ip", String(64), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("request_id", String(32), nullable=True),
    Column("detail", Text, nullable=False, default=""),
)

# Runs and schedules have no foreign key to models: their history outlives a deleted model.
runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), ForeignKey("users.id"), nullable=False, index=True),
    Column("model_id", String(32), nullable=True, index=True),
    Column("schedule_id", String(32), nullable=True, index=True),
    Column("file", String(512), nullable=True),
    Column("function", String(256), nullable=True),
    Column("command", Text, nullable=False),
    Column("bundle_sha256", String(64), nullable=False),
    Column("timeout_seconds", Float, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False, index=True),
    Column("message", Text, nullable=False, default=""),
    Column("exit_code", Integer, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("published_version_id", String(32), nullable=True, unique=True),
    Column("published_version", Integer, nullable=True),
    #: server, isolated, a named environment, or None: the project decides (as for publish)
    Column("environment", String(128), nullable=True),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), ForeignKey("users.id"), nullable=False, index=True),
    Column("model_id", String(32), nullable=True, index=True),
    Column("file", String(512), nullable=True),
    Column("function", String(256), nullable=True),
    Column("command", Text, nullable=False),
    Column("bundle_sha256", String(64), nullable=False),
    Column("cron", String(128), nullable=True),
    Column("interval_seconds", Integer, nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("timeout_seconds", Float, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("paused", Boolean, nullable=False, default=False),
    Column("next_run_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("environment", String(128), nullable=True),
)

#: which server serves from this database (one row, ``id = "server"``): a second server on the
#: same database refuses to start while the holder's heartbeat is fresh
server_leases = Table(
    "server_leases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("home", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

#: calls per version and minute, written by the server from its in-memory metrics so the
#: charts survive a restart; rows older than ``metrics_retention_days`` are deleted
call_minutes = Table(
    "call_minutes",
    metadata,
    Column("version_id", String(32), primary_key=True),
    Column("minute", Integer, primary_key=True),  # minutes since the epoch, UTC
    Column("model_id", String(32), nullable=False),
    Column("version_number", Integer, nullable=False),
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),  # 5xx
    Column("client_errors", Integer, nullable=False),  # 4xx
    Column("latency_sum_ms", Float, nullable=False),
    Column("latency_max_ms", Float, nullable=False),
    Column("buckets", Text, nullable=False),  # JSON: {latency bucket index: calls}
    Index("ix_call_minutes_model_minute", "model_id", "minute"),
    Index("ix_call_minutes_minute", "minute"),
)

#: asynchronous predictions: stored before the submit is answered, run once by the main server
#: process's queue (serving/predictions.py), deleted ``async_retention_hours`` after they end
async_predictions = Table(
    "async_predictions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model_id", String(32), nullable=False),
    #: the route the call goes to: latest, labels/NAME or versions/N
    Column("route", String(80), nullable=False),
    #: the request body, as the synchronous call would have sent it to the instance
    Column("body", Text, nullable=False),
    #: queued | running | succeeded | failed
    Column("status", String(16), nullable=False),
    #: sha256 (hex) of the access token it was submitted with (None: without a token)
    Column("token_sha256", String(64), nullable=True),
    #: the user who submitted it from the tester or the client with an API key
    Column("user_id", String(32), nullable=True),
    Column("request_id", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    #: the synchronous envelope's fields as JSON: result, release, timing, model_time_in_ms
    Column("outcome", Text, nullable=True),
    #: the error envelope's object as JSON: {"code", "message"}
    Column("error", Text, nullable=True),
    #: the HTTP status the synchronous call would have had
    Column("http_status", Integer, nullable=True),
    Index("ix_async_predictions_status_created", "status", "created_at"),
    Index("ix_async_predictions_finished", "finished_at"),
)

#: a model's webhook, called when one of its asynchronous predictions ends
model_webhooks = Table(
    "model_webhooks",
    metadata,
    Column("model_id", String(32), primary_key=True),
    Column("url", Text, nullable=False),
    #: the HMAC-SHA256 key, encrypted with the server key
    Column("secret", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

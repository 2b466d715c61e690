"""Every setting, defined once as data.

Precedence, highest first: command-line options, ``MODELHOST_<NAME>`` environment variables,
the settings file (``$MODELHOST_HOME/modelhost.toml``), the defaults below. A bad value fails at
start-up with a message naming the setting and the value. ``modelhost serve --help-settings``
prints this table, and ``docs/settings.md`` documents every entry (a test checks both agree).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelhost.errors import InvalidSetting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "MODELHOST_"
SETTINGS_FILE = "modelhost.toml"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _int(value: Any) -> int:
    """A whole number, from a TOML integer or from text (the environment's): never a boolean
    nor a float, which ``int()`` would turn into 1 or truncate (500.5 into 500)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    whole = _written_with_a_point(value)
    if whole is not None:
        raise ValueError(f"expected a whole number: write {whole}, without the decimal point")
    raise ValueError("expected a whole number")


def _written_with_a_point(value: Any) -> int | None:
    """The whole number a float or text such as ``500.0`` stands for, or None."""
    if isinstance(value, bool) or not isinstance(value, (str, float)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _float(value: Any) -> float:
    """A finite number, from a TOML integer or float or from text; never a boolean, which
    ``float()`` would turn into 1.0."""
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def _positive_float(value: Any) -> float:
    number = _float(value)
    if not number > 0:
        raise ValueError("expected a number greater than 0")
    return number


def _non_negative_float(value: Any) -> float:
    number = _float(value)
    if not number >= 0:
        raise ValueError("expected a number of at least 0")
    return number


def _non_negative_int(value: Any) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError("expected a whole number of at least 0")
    return number


def _port(value: Any) -> int:
    number = _int(value)
    if not 1 <= number <= 65535:
        raise ValueError("expected a port number between 1 and 65535")
    return number


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _invocation_mode(value: Any) -> str:
    mode = str(value).lower()
    if mode not in {"token", "public"}:
        raise ValueError("expected token or public")
    return mode


def _isolation(value: Any) -> str:
    mode = str(value).lower()
    if mode not in {"auto", "sandbox", "none"}:
        raise ValueError("expected auto, sandbox or none")
    return mode


def _cpu_limit(value: Any) -> str:
    mode = str(value).lower()
    if mode not in {"auto", "cgroup", "affinity"}:
        raise ValueError("expected auto, cgroup or affinity")
    return mode


def _backend(value: Any) -> str:
    name = str(value).lower()
    if name not in {"local", "ray"}:
        raise ValueError("expected local or ray")
    return name


def _non_negative_cpus(value: Any) -> float:
    number = _float(value)
    if number < 0:
        raise ValueError("expected a number of CPUs of at least 0")
    return number


def _tiers(value: Any) -> Any:
    from modelhost.tiers import parse_tiers

    return parse_tiers(value)


def _fraction(value: Any) -> float:
    number = _float(value)
    if not 0 < number <= 1:
        raise ValueError("expected a number above 0 and at most 1")
    return number


def _async_timeout(value: Any) -> float:
    number = _positive_float(value)
    if number > 3600:
        raise ValueError("expected a number of seconds above 0 and at most 3600 (an hour)")
    return number


def _busy_poll(value: Any) -> int:
    number = _non_negative_int(value)
    if number > 100_000:
        raise ValueError(
            "expected microseconds from 0 (never poll) to 100000 (a tenth of a second); a "
            "wake-up costs tens of microseconds, so a few hundred is plenty"
        )
    return number


def _synchronous(value: Any) -> str:
    mode = str(value).lower()
    if mode not in {"full", "normal"}:
        raise ValueError("expected full or normal")
    return mode


def _code_runners(value: Any) -> str:
    who = str(value).lower()
    if who not in {"admins", "users"}:
        raise ValueError("expected admins or users")
    return who


#: where sandbox_first_uid may start its range: above system accounts, with room for its 1048576
#: uids below 2**32 - 2 (the last two uids, -2 and -1 as a uid_t, are special)
_FIRST_UIDS = (1000, 2**32 - 2 - (1 << 20))


def _uid(value: Any) -> int:
    number = _int(value)
    if not _FIRST_UIDS[0] <= number <= _FIRST_UIDS[1]:
        raise ValueError("expected a uid of at least 1000 that leaves room for 1048576 more")
    return number


def _token(value: Any) -> str:
    text = str(value)
    if len(text) < 16 or any(c.isspace() for c in text):
        raise ValueError("expected at least 16 characters and no spaces (a hard-to-guess token)")
    return text


def _log_level(value: Any) -> str:
    level = str(value).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError("expected one of debug, info, warning, error")
    return level


#: the values each number parser accepts, as ``--help-settings`` shows them after the default
_RANGES: dict[Callable[[Any], Any], str] = {
    _port: "1 to 65535",
    _positive_int: "at least 1",
    _non_negative_int: "at least 0",
    _positive_float: "above 0",
    _non_negative_float: "at least 0",
    _non_negative_cpus: "at least 0",
    _fraction: "above 0, at most 1",
    _async_timeout: "above 0, at most 3600",
    _busy_poll: "0 to 100000",
    _uid: f"{_FIRST_UIDS[0]} to {_FIRST_UIDS[1]}",
}


@dataclass(frozen=True)
class Setting:
    """One setting: its name, how to parse it, its default and what it is for."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def range(self) -> str | None:
        """The values a number setting takes (``1 to 65535``), from its parser; None for others."""
        return _RANGES.get(self.parse)


def _default_home() -> str:
    return str(Path.home() / ".modelhost")


SETTINGS: tuple[Setting, ...] = (
    Setting("home", str, None, "Data directory: database, bundles, logs. Default ~/.modelhost."),
    Setting("host", str, "127.0.0.1", "Address the server listens on."),
    Setting("port", _port, 8000, "Port the server listens on."),
    Setting(
        "database_url",
        str,
        None,
        "SQLAlchemy URL of the database. Default: SQLite file modelhost.db in the data "
        "directory. PostgreSQL: postgresql+psycopg://user@host/db.",
        secret=True,
    ),
    Setting(
        "bundle_store",
        str,
        "",
        "Where bundles are also stored, as an fsspec URL: a shared directory "
        "(/mnt/models/bundles) or an object store (s3://bucket/bundles, with s3fs installed). "
        "Empty: only $MODELHOST_HOME/bundles. Every copy read back is checked by its sha256.",
    ),
    Setting(
        "public_url",
        str,
        None,
        "URL clients use to reach this server, written to the credentials file. "
        "Default: http://HOST:PORT.",
    ),
    Setting("log_level", _log_level, "info", "Server log level: debug, info, warning, error."),
    Setting(
        "trusted_proxies",
        str,
        "",
        "Addresses of reverse proxies whose X-Forwarded-For header gives the client's address "
        "(comma-separated, or * for any). Empty: the header is ignored, so no caller can "
        "choose the address recorded in the audit log or used for throttling.",
    ),
    Setting(
        "allowed_hosts",
        _str_list,
        (),
        "Host names this server answers to (comma-separated, any port; * for any). A request "
        "with another Host header gets HTTP 400, which stops DNS rebinding. Empty (the "
        "default): localhost, 127.0.0.1, [::1], the host setting and the host of public_url.",
    ),
    Setting(
        "max_bundle_bytes",
        _positive_int,
        500_000_000,
        "Largest project snapshot (uncompressed bytes) accepted by publish.",
    ),
    Setting(
        "max_bundle_files",
        _positive_int,
        100_000,
        "Most files and directories a project snapshot may hold.",
    ),
    Setting(
        "max_request_bytes",
        _positive_int,
        10 * 1024 * 1024,
        "Largest invocation request body; larger ones get HTTP 413.",
    ),
    Setting(
        "max_api_body_bytes",
        _positive_int,
        1024 * 1024,
        "Largest request body of an API call or a web UI form other than an upload; larger ones "
        "get HTTP 413. Uploads (publish, runs, schedules, the publish wizard) are bounded by "
        "max_bundle_bytes instead and go to disk as they arrive.",
    ),
    Setting(
        "max_header_bytes",
        _positive_int,
        16 * 1024,
        "Largest request line and headers of a request, together; larger ones get HTTP 431.",
    ),
    Setting(
        "header_timeout_seconds",
        _positive_float,
        10.0,
        "Time a client has to send a request's line and headers, counted from when it connected "
        "or got its previous answer; a slower one is disconnected.",
    ),
    Setting(
        "body_timeout_seconds",
        _positive_float,
        30.0,
        "Longest pause while a request body arrives; a client that sends nothing for longer "
        "is disconnected.",
    ),
    Setting(
        "max_connections",
        _positive_int,
        1000,
        "Open connections each server process serves; a request on one more gets HTTP 503.",
    ),
    Setting(
        "timeout_seconds",
        _positive_float,
        60.0,
        "Default time a call may take before it fails with HTTP 504 and the instance is replaced.",
    ),
    Setting(
        "max_timeout_seconds",
        _positive_float,
        3600.0,
        "Largest timeout a model may set for its calls.",
    ),
    Setting(
        "load_timeout_seconds",
        _positive_float,
        300.0,
        "Time an instance may take to import the script and report ready before the version fails.",
    ),
    Setting(
        "default_instance_count",
        _positive_int,
        1,
        "Instances a newly published model runs; not more than max_instance_count.",
    ),
    Setting("max_instance_count", _positive_int, 8, "Most instances one model may run."),
    Setting(
        "default_invocation_mode",
        _invocation_mode,
        "token",
        "Whether new models need an access token to be called: token (the default) or public.",
    ),
    Setting(
        "backend",
        _backend,
        "local",
        "What runs instances: local (worker processes on this machine, the default) or ray "
        "(each instance a Ray actor on a node of the Ray cluster at ray_address, which starts "
        "the same worker there; needs pip install 'modelhost[ray]' here and on every node).",
    ),
    Setting(
        "ray_address",
        str,
        "auto",
        "With backend = ray, the Ray cluster to join, as ray.init takes it: auto (the cluster "
        "started on this machine with ray start), or the head node's host:port.",
    ),
    Setting(
        "ray_instance_cpus",
        _non_negative_cpus,
        1.0,
        "With backend = ray, the CPUs one instance's actor asks Ray for (fractions allowed, 0 "
        "for none); Ray places an instance only on a node with that much free.",
    ),
    Setting(
        "gateway_processes",
        _positive_int,
        1,
        "Processes that accept invocation connections on the server's port. Above 1, the server "
        "starts that many minus one gateway processes beside itself and hands each of them some "
        "instances of every version; a process passes calls for a version it holds no instance "
        "of, and all API and web UI requests, to the main process. Up to the number of CPU "
        "cores; give a model at least as many instances as gateway processes.",
    ),
    Setting(
        "pipeline_depth",
        _positive_int,
        16,
        "Calls sent ahead to a busy instance (which still runs them one by one) before calls "
        "wait in the gateway's queue; 1 sends a call only to an instance with room. Sending "
        "ahead keeps instances busy under load and lets the gateway read many answers at once. "
        "A call's timeout counts from when it can run, and calls that never ran are sent to "
        "another instance when theirs dies.",
    ),
    Setting(
        "instance_busy_poll_microseconds",
        _busy_poll,
        500,
        "After answering, a Python instance whose last call came less than this long after the "
        "answer before it polls for its next call for up to this long instead of sleeping, "
        "while the machine has most of a core idle: a sleeping process takes tens of "
        "microseconds to wake. It cuts a small function's latency at low concurrency; the "
        "polling shows as CPU time of the instance. 0 never polls.",
    ),
    Setting(
        "max_queued_requests",
        _positive_int,
        100,
        "Calls that may wait per deployed version when every instance is busy; past it, "
        "HTTP 503 with Retry-After.",
    ),
    Setting(
        "shutdown_delay_seconds",
        _non_negative_float,
        0.0,
        "On SIGTERM, how long the server goes on answering while /health says 503 (not "
        "ready), so a load balancer takes it out before it stops taking connections; then it "
        "finishes the calls in flight and exits. Set it above the load balancer's health-check "
        "interval times its failure count. A second SIGTERM stops at once; 0 stops taking "
        "connections at the first.",
    ),
    Setting(
        "drain_timeout_seconds",
        _positive_float,
        30.0,
        "Time in-flight calls get to finish on an instance that is being stopped.",
    ),
    Setting(
        "switch_hold_seconds",
        _non_negative_float,
        10.0,
        "After a route moves to a new version, the old one keeps running this long; if the new "
        "one crashes meanwhile, the route moves back and the new version is marked failed. 0 "
        "stops the old one as soon as the route has moved.",
    ),
    Setting(
        "hardware_tiers",
        _tiers,
        {},
        "Named hardware tiers a model may pick (its tier): each with cpus (a finite number "
        "above 0, fractions allowed), memory_mb (a whole number, at least 1) and optionally "
        "gpus (a whole number, at least 0). In the settings file a table "
        "([hardware_tiers.small] cpus = 1, memory_mb = 2048); in the environment JSON "
        '({"small": {"cpus": 1, "memory_mb": 2048}}). Empty: no tiers.',
    ),
    Setting(
        "cpu_limit",
        _cpu_limit,
        "auto",
        "How a local instance gets its hardware tier's CPUs. auto: a cgroup with a CPU quota "
        "of exactly the tier's cpus where one is writable, otherwise a CPU affinity (the first "
        "ceil(cpus) cores); cgroup: refuse to start without a writable cgroup; affinity: "
        "always the affinity.",
    ),
    Setting(
        "cgroup_parent",
        str,
        "",
        "The cgroup (a directory under /sys/fs/cgroup) in which the server makes its "
        "instances' cgroups; empty: the server's own cgroup (v2, else v1's cpu controller).",
    ),
    Setting(
        "instance_memory_limit_mb",
        _non_negative_int,
        0,
        "Resident memory (MB) above which an instance is stopped and replaced; 0 for no limit.",
    ),
    Setting(
        "reconcile_interval_seconds",
        _positive_float,
        1.0,
        "How often the reconciler compares desired and actual state.",
    ),
    Setting(
        "quota_flush_seconds",
        _positive_float,
        10.0,
        "How often access tokens' quota usage is written to the database (and when the server "
        "stops); a crash loses at most this long of counted calls.",
    ),
    Setting(
        "scheduler_interval_seconds",
        _positive_float,
        1.0,
        "How often the scheduler looks for due schedules, starts queued runs and checks "
        "running ones for a cancel.",
    ),
    Setting(
        "schedule_min_interval_seconds",
        _positive_int,
        60,
        "Shortest interval a schedule may have (every N seconds, minutes or hours).",
    ),
    Setting(
        "run_timeout_seconds",
        _positive_float,
        3600.0,
        "Default time a run may take before its processes are killed and it fails.",
    ),
    Setting(
        "max_run_timeout_seconds",
        _positive_float,
        86400.0,
        "Largest timeout a run or schedule may ask for.",
    ),
    Setting(
        "max_concurrent_runs",
        _positive_int,
        2,
        "Runs that execute at once; further runs wait, queued, in the order they were made.",
    ),
    Setting(
        "python",
        str,
        None,
        "Python interpreter that runs instances in the server environment. Default: the "
        "server's own.",
    ),
    Setting(
        "environment_build_timeout_seconds",
        _positive_float,
        600.0,
        "Time resolving, locking and installing one isolated environment may take before the "
        "version's build fails.",
    ),
    Setting(
        "uv_cache_dir",
        str,
        None,
        "uv's download and wheel cache, shared by every environment build. Default: uv-cache "
        "in the data directory.",
    ),
    Setting(
        "rscript",
        str,
        None,
        "Rscript program that runs R instances. Default: Rscript found on the PATH.",
    ),
    Setting(
        "instance_env_passthrough",
        _str_list,
        (
            "PATH",
            "LANG",
            "LANGUAGE",
            "LC_ALL",
            "LC_CTYPE",
            "TZ",
            "TMPDIR",
            "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ),
        "Server environment variables an instance inherits (comma-separated); nothing else "
        "of the server's environment reaches user code.",
    ),
    Setting(
        "isolation",
        _isolation,
        "auto",
        "How models' and runs' code is confined: auto (a bubblewrap sandbox wherever bwrap "
        "works, otherwise none, said loudly), sandbox (refuse to start without one) or none.",
    ),
    Setting(
        "sandbox_max_processes",
        _positive_int,
        512,
        "Processes and threads the code of one sandboxed instance or run may have at once.",
    ),
    Setting(
        "sandbox_max_open_files",
        _positive_int,
        4096,
        "Files and sockets one sandboxed process may have open at once.",
    ),
    Setting(
        "sandbox_first_uid",
        _uid,
        1_000_000_000,
        "When the server runs as root, sandboxed code runs as an unprivileged uid of its "
        "model's own, from this one to this one plus 1048575; no account may use that range.",
    ),
    Setting(
        "code_runners",
        _code_runners,
        "admins",
        "Who may start runs and schedules that publish to no model, which run any command on "
        "the server: admins (the default) or users (every signed-in user).",
    ),
    Setting(
        "model_creators",
        _code_runners,
        "users",
        "Who may create new models: users (every signed-in user, the default) or admins.",
    ),
    Setting(
        "rollback_error_rate",
        _fraction,
        0.5,
        "During the switch hold, a version whose calls fail (5xx: raising, crashing, timing "
        "out) at more than this share, of at least rollback_min_calls, loses the route it "
        "took, which goes back; 1 turns the watch off.",
    ),
    Setting(
        "rollback_min_calls",
        _positive_int,
        20,
        "How many calls a version must have answered in the switch hold before its failure "
        "share can send the route back.",
    ),
    Setting(
        "sqlite_synchronous",
        _synchronous,
        "full",
        "How SQLite writes its commits: full (each commit is on disk before it is answered, "
        "the default) or normal (faster; the last commits can be lost on a power failure or "
        "an operating system crash, never on a crash of modelhost alone).",
    ),
    Setting(
        "metrics_token",
        _token,
        None,
        "A token Prometheus may read /metrics with ('Authorization: Bearer TOKEN'), besides "
        "admins' API keys: at least 16 characters and no spaces. Unset (the default): only "
        "admins' API keys.",
        secret=True,
    ),
    Setting(
        "metrics_retention_days",
        _positive_int,
        30,
        "Days the per-minute call aggregates behind the metrics charts are kept.",
    ),
    Setting(
        "request_log",
        _bool,
        True,
        "Write a line per call (time, request id, model, version, route, status, duration, "
        "source address; never the body or a token) to logs/<model id>/requests.log.",
    ),
    Setting(
        "request_log_max_bytes",
        _positive_int,
        10_000_000,
        "Size at which a model's request log is rotated to requests.log.1.",
    ),
    Setting(
        "request_log_backups",
        _non_negative_int,
        3,
        "Rotated request logs kept per model (requests.log.1 ... .N); older ones are deleted.",
    ),
    Setting(
        "capture_retention_days",
        _positive_int,
        30,
        "Days captured calls (models with capture on) are kept; older hourly partitions under "
        "captures/ are deleted by housekeeping.",
    ),
    Setting(
        "capture_queue_records",
        _positive_int,
        10_000,
        "Captured calls each server process holds in memory before they are written; when "
        "the queue is full, further ones are dropped and counted "
        "(modelhost_capture_dropped_total), never waited for.",
    ),
    Setting(
        "capture_max_record_bytes",
        _positive_int,
        1_000_000,
        "Largest captured call (input and output together); a larger one is dropped and "
        "counted. With capture_queue_records, it bounds the memory capture may take.",
    ),
    Setting(
        "max_reference_bytes",
        _positive_int,
        100 * 1024 * 1024,
        "Largest reference data set (CSV or Parquet) a drift report may be given.",
    ),
    Setting(
        "async_timeout_seconds",
        _async_timeout,
        3600.0,
        "Time an asynchronous prediction may run before it fails.",
    ),
    Setting(
        "async_instance_share",
        _fraction,
        0.5,
        "Share of a version's instances asynchronous predictions may keep busy at once (at "
        "least one), so synchronous callers always have the rest.",
    ),
    Setting(
        "async_retention_hours",
        _positive_float,
        24.0,
        "Hours an asynchronous prediction's result is kept after it ends; then it is deleted.",
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


class Settings:
    """Resolved settings; read them as attributes (``settings.port``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        shown = {
            s.name: ("***" if s.secret and self._values[s.name] else self._values[s.name])
            for s in SETTINGS
        }
        return f"Settings({shown})"

    def replace(self, **changes: Any) -> Settings:
        return load_settings(overrides={**self._values, **changes}, environ={})

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def envs_path(self) -> Path:
        """Where isolated environments live, one directory per lock and interpreter."""
        return self.home_path / "envs"

    @property
    def uv_cache_path(self) -> Path:
        return Path(self.uv_cache_dir) if self.uv_cache_dir else self.home_path / "uv-cache"

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        """``allowed_hosts``, or when it is empty the served host and the local names."""
        if self.allowed_hosts:
            return tuple(self.allowed_hosts)
        names = ["localhost", "127.0.0.1", "[::1]", self.host]
        public = urlsplit(self.public_url).hostname if self.public_url else None
        if public:
            names.append(f"[{public}]" if ":" in public else public)
        return tuple(names)


def _parse(setting: Setting, value: Any, source: str) -> Any:
    try:
        return setting.parse(value)
    except (TypeError, ValueError) as exc:
        # a boolean as the settings file spells it (true), not as Python does (True)
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise InvalidSetting(
            f"Setting '{setting.name}' from {source} has the invalid value {shown}: {exc}."
        ) from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting from overrides (CLI), environment, settings file and defaults."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(SETTINGS_BY_NAME))
    if unknown:
        raise InvalidSetting(f"Unknown setting(s): {', '.join(unknown)}.")

    home = overrides.get("home") or environ.get(ENV_PREFIX + "HOME") or _default_home()
    home = str(Path(home).expanduser().resolve())
    file_values = _read_settings_file(Path(home) / SETTINGS_FILE)

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            raw, source = overrides[setting.name], "the command line"
        elif setting.env_var in environ:
            raw, source = environ[setting.env_var], f"${setting.env_var}"
        elif setting.name in file_values:
            raw, source = file_values[setting.name], SETTINGS_FILE
        else:
            values[setting.name] = setting.default
            continue
        values[setting.name] = _parse(setting, raw, source)
    values["home"] = home
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{Path(home) / 'modelhost.db'}"
    if values["default_instance_count"] > values["max_instance_count"]:
        raise InvalidSetting(
            "Setting 'default_instance_count' is larger than 'max_instance_count'; "
            "raise max_instance_count or lower default_instance_count."
        )
    return Settings(values)


def _read_settings_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidSetting(f"Cannot read settings file {path}: {exc}.") from None
    unknown = sorted(set(data) - set(SETTINGS_BY_NAME))
    if unknown:
        raise InvalidSetting(f"Unknown setting(s) in {path}: {', '.join(unknown)}.")
    if "home" in data:
        raise InvalidSetting(
            f"'home' cannot be set in {path}, which lives in the data directory itself; use "
            "--home or MODELHOST_HOME."
        )
    return data


#: MODELHOST_* variables that are not server settings: the client's, and those instances get.
OTHER_VARIABLES = (
    "URL",
    "API_KEY",
    "TOKEN",
    "MODEL_ID",
    "MODEL_NAME",
    "MODEL_VERSION",
    "INSTANCE_NONCE",
    "INSTANCE_ID",
    "RUN_ID",
    "WORKING_DIR",
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``MODELHOST_*`` variables that name no setting: most likely typos."""
    known = {s.env_var for s in SETTINGS} | {ENV_PREFIX + n for n in OTHER_VARIABLES}
    return sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)


def settings_help() -> str:
    """The table printed by ``modelhost serve --help-settings``."""
    lines = []
    for s in SETTINGS:
        default = "(see help)" if s.default is None else s.default
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, bool):  # as the settings file and the environment spell it
            default = str(default).lower()
        shown = f"  range: {s.range}" if s.range else ""
        lines.append(f"{s.name}  [{s.env_var}]  default: {default}{shown}\n    {s.help}")
    return "\n".join(lines)

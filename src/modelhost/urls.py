"""The one place URLs are built."""

from __future__ import annotations

import re
from urllib.parse import quote

API = "/api/v1"
OPENAPI = f"{API}/openapi.json"
HEALTH = "/health"
FAVICON = "/favicon.ico"
#: Prometheus metrics, for admins' API keys and the metrics token
METRICS = "/metrics"
#: every invocation URL starts with this; everything else is the control plane or the UI
INVOKE_PREFIX = "/models/"
#: a model route's OpenAPI document (``/models/{model}/openapi.json`` and the same under a
#: label or a version) is served by the control plane, not the gateway
MODEL_OPENAPI = "/openapi.json"
#: the user name and password of a URL (greedy up to the host's last '@': "p@ss" is common)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def without_credentials(text: str) -> str:
    """``text`` with the user name and password taken out of every URL in it.

    ``git+https://TOKEN@host/repo@v1`` -> ``git+https://host/repo@v1``; used wherever a git
    source is recorded or shown (the client, the publish API, build logs, git's own errors).
    """
    return _USERINFO.sub(r"\1", text)


def is_invocation(path: str) -> bool:
    """Whether ``path`` is the gateway's: an invocation URL, not a model's document."""
    return path.startswith(INVOKE_PREFIX) and not path.endswith(MODEL_OPENAPI)


def model_openapi(model: str, route: str = "latest") -> str:
    """The OpenAPI document of ``route`` (``latest``, ``labels/prod``, ``versions/3``)."""
    base = f"/models/{quote(model, safe='')}"
    if route == "latest":
        return base + MODEL_OPENAPI
    kind, _, name = route.partition("/")
    return f"{base}/{kind}/{quote(name, safe='')}{MODEL_OPENAPI}"


def invoke_latest(model: str) -> str:
    return f"/models/{quote(model, safe='')}/latest/model"


def invoke_version(model: str, number: int | str) -> str:
    return f"/models/{quote(model, safe='')}/versions/{number}/model"


def invoke_label(model: str, label: str) -> str:
    return f"/models/{quote(model, safe='')}/labels/{quote(label, safe='')}/model"


def api_models() -> str:
    return f"{API}/models"


def api_model(model: str) -> str:
    return f"{API}/models/{quote(model, safe='')}"


def api_versions(model: str) -> str:
    return f"{api_model(model)}/versions"


def api_version(model: str, number: int) -> str:
    return f"{api_versions(model)}/{number}"


def api_requests(model: str) -> str:
    return f"{api_model(model)}/requests"


def api_captures(model: str) -> str:
    return f"{api_model(model)}/captures"


def api_drift(model: str) -> str:
    return f"{api_captures(model)}/drift"


def api_logs(model: str) -> str:
    return f"{api_model(model)}/logs"


def api_metrics(model: str) -> str:
    return f"{api_model(model)}/metrics"


def api_instances(model: str) -> str:
    return f"{api_model(model)}/instances"


def api_test(model: str) -> str:
    return f"{API}/models/{quote(model, safe='')}/test"


def api_groups(name: str | None = None) -> str:
    return f"{API}/groups" + (f"/{quote(name, safe='')}" if name else "")


def api_me() -> str:
    return f"{API}/me"


def api_model_action(model: str, action: str) -> str:
    """``/api/v1/models/{model}/{action}``: deploy, rollback, promote, stop, start, ..."""
    return f"{api_model(model)}/{action}"


def api_label(model: str, label: str) -> str:
    return f"{api_model(model)}/labels/{quote(label, safe='')}"


def api_env(model: str, name: str | None = None) -> str:
    base = f"{api_model(model)}/env"
    return base if name is None else f"{base}/{quote(name, safe='')}"


def api_environments(name: str | None = None) -> str:
    base = f"{API}/environments"
    return base if name is None else f"{base}/{quote(name, safe='')}"


def api_runs() -> str:
    return f"{API}/runs"


def api_run(run_id: str, action: str | None = None) -> str:
    base = f"{API}/runs/{quote(run_id, safe='')}"
    return base if action is None else f"{base}/{action}"


def api_schedules() -> str:
    return f"{API}/schedules"


def api_schedule(schedule_id: str, action: str | None = None) -> str:
    base = f"{API}/schedules/{quote(schedule_id, safe='')}"
    return base if action is None else f"{base}/{action}"


def invoke_async(model: str, route: str = "latest") -> str:
    """The asynchronous twin of a route's invocation URL (``route``: latest, labels/L,
    versions/N)."""
    return f"/models/{quote(model, safe='')}/{route}/async"


def invoke_prediction(model: str, prediction_id: str) -> str:
    """Where an asynchronous prediction is read."""
    return f"/models/{quote(model, safe='')}/predictions/{quote(prediction_id, safe='')}"


#: the hosted product's asynchronous API: POST {HOSTED_ASYNC}/{modelId}, GET .../{predictionId}
HOSTED_ASYNC = "/api/modelApis/async/v1/"

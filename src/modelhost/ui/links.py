"""Every UI URL, built in one place (templates use these through ``links``)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

PREFIX = "/ui"


def _q(value: str) -> str:
    return quote(value, safe="")


def home() -> str:
    return f"{PREFIX}/"


def sign_in() -> str:
    return f"{PREFIX}/sign-in"


def sign_out() -> str:
    return f"{PREFIX}/sign-out"


def static(name: str, version: str) -> str:
    return f"{PREFIX}/static/{name}?v={version}"


def models(search: str | None = None) -> str:
    return f"{PREFIX}/models" + (f"?{urlencode({'q': search})}" if search else "")


def publish(model: str | None = None) -> str:
    return f"{PREFIX}/publish" + (f"?{urlencode({'model': model})}" if model else "")


def groups() -> str:
    return f"{PREFIX}/groups"


def group_action(what: str) -> str:
    return f"{PREFIX}/groups/actions/{what}"


def server_audit() -> str:
    return f"{PREFIX}/audit"


def model(name: str, page: str = "") -> str:
    """A model's page: '' (overview), versions, instances, settings, audit."""
    base = f"{PREFIX}/models/{_q(name)}"
    return f"{base}/{page}" if page else base


def version(name: str, number: int) -> str:
    return f"{model(name, 'versions')}/{number}"


def action(name: str, what: str) -> str:
    """Where a model's form posts: deploy, rollback, tokens/create, ..."""
    return f"{model(name)}/actions/{what}"

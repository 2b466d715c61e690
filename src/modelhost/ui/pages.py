"""The UI's pages. Each builds one context from the operations and renders it (HTML or JSON)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from modelhost import errors, urls
from modelhost.db.repo import Model, User
from modelhost.httpkit.deps import ServicesDep
from modelhost.operations import (
    Services,
    access_control,
    groups,
    lifecycle,
    model_docs,
    variables,
)
from modelhost.operations import audit as audit_ops
from modelhost.operations import metrics as metrics_ops
from modelhost.operations import models as ops
from modelhost.operations.access_control import authorize, visible_models
from modelhost.permissions import PERMISSIONS, allowed, role_of
from modelhost.ui import apidocs, links, snippets
from modelhost.ui import charts as charts_svg
from modelhost.ui.render import UIRoute, render, wants_json
from modelhost.ui.session import SessionUser

router = APIRouter(prefix=links.PREFIX, route_class=UIRoute, include_in_schema=False)


def user_context(user: User) -> dict[str, Any]:
    return {"user": access_control.user_view(user)}


def model_context(services: Services, user: User, key: str, action: str = "view") -> Model:
    return authorize(services, user, key, action)


def _model_page(
    services: Services, user: User, model: Model, page: str, **extra: Any
) -> dict[str, Any]:
    """What every page of a model shows: the model, the user's role, what they may do."""
    role = role_of(user, model, access_control.roles_on(services, model))
    can = {action: allowed(user, action, model, role) for action in PERMISSIONS}
    return {
        **user_context(user),
        "model": ops.model_view(services, model),
        "role": "admin" if user.is_admin and role is None else role,
        "can": can,
        "page": page,
        **extra,
    }


def _request_rate(services: Services, model: Model) -> float:
    """Calls per minute to all of the model's versions over the last five minutes."""
    totals = metrics_ops.model_metrics(services, model, RATE_MINUTES)["versions"]
    return round(sum(v["totals"]["requests_per_minute"] for v in totals), 2)


RATE_MINUTES = 5


@router.get("/", summary="The UI's front page")
def home() -> Response:
    return RedirectResponse(links.models(), status_code=303)


@router.get("/models", summary="The models you may see")
def models_page(
    request: Request, services: ServicesDep, user: SessionUser, q: str = ""
) -> Response:
    found = [
        {**ops.model_view(services, m), "requests_per_minute": _request_rate(services, m)}
        for m in visible_models(services, user)
    ]
    needle = q.strip().lower()
    if needle:
        found = [
            m
            for m in found
            if needle in m["name"] or needle in m["description"].lower() or needle in m["owner"]
        ]
    context = {**user_context(user), "models": found, "q": q}
    return render(request, services, "models/list.html", context)


def serving_routes(services: Services, model: Model) -> list[dict[str, Any]]:
    """Every route of the model as the gateway serves it now: ``latest`` and each label, with
    the versions it sends calls to and their share of them (a canary splits one label)."""
    route = services.routes.find(model.id)
    if route is None:
        return []
    shown = []
    for key, targets in sorted(route.routes.items(), key=lambda item: item[0] != "latest"):
        total = sum(weight for _number, weight in targets) or 1
        shown.append(
            {
                "route": "latest" if key == "latest" else "label " + key.split("/", 1)[-1],
                "versions": [
                    {"number": number, "percent": round(weight * 100 / total)}
                    for number, weight in targets
                ],
            }
        )
    return shown


@router.get("/models/{model}", summary="A model's overview: URLs, tester, snippets")
def overview(request: Request, model: str, services: ServicesDep, user: SessionUser) -> Response:
    found = model_context(services, user, model)
    versions = ops.list_versions(services, found)
    base = services.settings.url.rstrip("/")
    context = _model_page(services, user, found, "overview")
    view = context["model"]
    serving = next((v for v in versions if v["number"] == view["latest_version"]), None)
    newest = versions[-1] if versions else None
    shown = serving or newest or {}
    batch = shown.get("batch")  # a batching function's limits, from the version's view
    sample = snippets.sample_input(
        shown.get("signature"), shown.get("example"), batching=batch is not None
    )
    note = (
        snippets.one_input_note(shown["function"], r=shown["file"].lower().endswith(".r"))
        if batch is not None
        else None
    )
    routes = [{"route": "latest", "value": "latest", "url": base + urls.invoke_latest(found.name)}]
    routes += [
        {
            "route": f"label {label}",
            "value": f"labels/{label}",
            "url": base + urls.invoke_label(found.name, label),
        }
        for label in sorted(view["labels"])
    ]
    routes += [
        {
            "route": f"version {v['number']}",
            "value": f"versions/{v['number']}",
            "url": base + urls.invoke_version(found.name, v["number"]),
        }
        for v in reversed(versions)
        if v["status"] == "running"
    ]
    token_required = found.invocation_mode == "token"
    context.update(
        routes=routes,
        serving_routes=serving_routes(services, found),
        sample=sample.body,
        sample_is_skeleton=sample.skeleton,
        sample_signature=shown.get("signature"),
        sample_batch=batch,
        sample_function=shown.get("function"),
        sample_note=note,
        tester_url=links.model(found.name, "test"),
        predictions_url=links.model(found.name, "predictions"),
        snippets=snippets.snippets(
            routes[0]["url"], sample.body, token_required=token_required, note=note
        ),
        token_required=token_required,
        serving=serving,
    )
    return render(request, services, "model/overview.html", context)


@router.get("/models/{model}/docs", summary="A model's API docs, from its OpenAPI document")
def docs_page(
    request: Request,
    model: str,
    services: ServicesDep,
    user: SessionUser,
    route: Annotated[str, Query(description="latest, labels/NAME or versions/N")] = "latest",
) -> Response:
    found = model_context(services, user, model)
    context = _model_page(services, user, found, "docs")
    choices = [{"value": "latest", "label": "latest"}]
    choices += [
        {"value": f"labels/{name}", "label": f"label {name}"}
        for name in sorted(context["model"]["labels"])
    ]
    choices += [
        {"value": f"versions/{v['number']}", "label": f"version {v['number']}"}
        for v in reversed(ops.list_versions(services, found))
        if v["status"] != "failed"
    ]
    context.update(route=route, route_choices=choices, docs=None, document=None, problem=None)
    try:
        version = model_docs.resolve(services, found, route)
    except errors.NotFound as exc:
        context["problem"] = exc.message
    else:
        document = model_docs.document(services, found, version, route)
        context.update(
            docs=apidocs.page_context(document),
            document=document,
            json_url=urls.model_openapi(found.name, route),
        )
    return render(request, services, "model/docs.html", context)


@router.get("/models/{model}/versions", summary="A model's versions, with actions")
def versions_page(
    request: Request, model: str, services: ServicesDep, user: SessionUser
) -> Response:
    found = model_context(services, user, model)
    context = _model_page(
        services,
        user,
        found,
        "versions",
        versions=list(reversed(ops.list_versions(services, found))),
        labels=lifecycle.list_labels(services, found),
    )
    return render(request, services, "model/versions.html", context)


@router.get("/models/{model}/versions/{number}", summary="One version with its build log")
def version_page(
    request: Request, model: str, number: int, services: ServicesDep, user: SessionUser
) -> Response:
    found = model_context(services, user, model)
    version = ops.show_version(services, found, number)
    context = _model_page(services, user, found, "versions", version=version)
    return render(request, services, "model/version.html", context)


@router.get("/models/{model}/instances", summary="Instances and the log, with live tail")
def instances_page(
    request: Request, model: str, services: ServicesDep, user: SessionUser
) -> Response:
    found = model_context(services, user, model)
    context = _model_page(services, user, found, "instances")
    context["instances"] = ops.list_instances(services, found)
    can_read = context["can"]["view-logs"]
    context["lines"] = ops.read_logs(services, found, tail=200) if can_read else []
    context["request_log"] = services.settings.request_log
    context["requests"] = (
        ops.read_requests(services, found, tail=REQUEST_LINES)[::-1]
        if can_read and services.settings.request_log
        else []
    )
    return render(request, services, "model/instances.html", context)


#: request log lines the instances page shows, newest first
REQUEST_LINES = 50


@router.get("/models/{model}/logs", summary="Log lines (the live tail polls this)")
def logs(
    request: Request,
    model: str,
    services: ServicesDep,
    user: SessionUser,
    after: str | None = None,
    tail: Annotated[int, Query()] = 200,
) -> Response:
    found = model_context(services, user, model, "view-logs")
    lines = ops.read_logs(services, found, tail=tail, after=after)
    return render(request, services, "model/logs.html", {"lines": lines, "model_name": found.name})


@router.get("/models/{model}/metrics", summary="Calls, errors and latency per version, as charts")
def metrics_page(
    request: Request,
    model: str,
    services: ServicesDep,
    user: SessionUser,
    chosen: Annotated[str, Query(alias="range", description="1h, 24h or 7d")] = "1h",
) -> Response:
    found = model_context(services, user, model)
    minutes = metrics_ops.RANGES.get(chosen)
    if minutes is None:
        raise errors.BadRequest(
            f"Unknown range '{chosen}'; choose one of {', '.join(metrics_ops.RANGES)}."
        )
    data = metrics_ops.model_metrics(services, found, minutes)
    versions = data["versions"]
    labels = [f"version {v['version_number']}" for v in versions]

    context = _model_page(
        services, user, found, "metrics", metrics=data, range=chosen, ranges=metrics_ops.RANGES
    )
    if not wants_json(request):  # the twin has the numbers; the page draws them too

        def series(field: str, scale: float = 1.0) -> list[tuple[str, list[float | None]]]:
            return [
                (label, [None if p[field] is None else p[field] * scale for p in v["points"]])
                for label, v in zip(labels, versions, strict=True)
            ]

        step = data["step_minutes"]
        per = "minute" if step == 1 else f"{step} minutes"
        span = f"-{chosen}"
        context["charts"] = [
            (
                f"Requests per {per}",
                charts_svg.line_chart(f"Requests per {per}", "", series("requests"), span),
            ),
            (
                "Error rate (5xx)",
                charts_svg.line_chart("Error rate (5xx)", "%", series("error_rate", 100.0), span),
            ),
            ("p50 latency", charts_svg.line_chart("p50 latency", " ms", series("p50_ms"), span)),
            ("p99 latency", charts_svg.line_chart("p99 latency", " ms", series("p99_ms"), span)),
        ]
        context["legend"] = charts_svg.legend(labels)
    return render(request, services, "model/metrics.html", context)


@router.get("/models/{model}/settings", summary="Settings, each part shown by role")
def settings_page(
    request: Request, model: str, services: ServicesDep, user: SessionUser
) -> Response:
    return render(request, services, "model/settings.html", settings_context(services, user, model))


def settings_context(services: Services, user: User, key: str) -> dict[str, Any]:
    found = model_context(services, user, key)
    context = _model_page(services, user, found, "settings")
    can = context["can"]
    listed = ops.list_versions(services, found)
    context.update(
        batching=[v for v in listed if v["batch"]] if can["manage-settings"] else [],
        variables=variables.list_env(services, found) if can["view-config"] else [],
        tokens=access_control.list_tokens(services, found) if can["manage-tokens"] else [],
        collaborators=access_control.collaborators(services, found),
        group_roles=groups.group_roles(services, found),
        group_names=[g.name for g in services.repo.list_groups()],
        labels=lifecycle.list_labels(services, found),
        versions=[v["number"] for v in listed if v["status"] != "failed"],
        new_token=None,
        max_instance_count=services.settings.max_instance_count,
        tiers=sorted(services.settings.hardware_tiers.values(), key=lambda t: t.name),
    )
    return context


def _since(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise errors.BadRequest(
            f"'{value}' is not a date; use the form 2026-12-01 or 2026-12-01T09:30."
        ) from None


def _audit_response(
    request: Request,
    services: Services,
    events: list[dict[str, Any]],
    output: str,
    context: dict[str, Any],
) -> Response:
    if output == "csv":  # the export
        headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
        return Response(audit_ops.to_csv(events), media_type="text/csv", headers=headers)
    context["events"] = events
    return render(request, services, "audit.html", context)


@router.get("/models/{model}/audit", summary="A model's audit log, with filters and export")
def model_audit_page(
    request: Request,
    model: str,
    services: ServicesDep,
    user: SessionUser,
    actor: str = "",
    action: str = "",
    since: str = "",
    format: str = "html",
) -> Response:
    found = model_context(services, user, model, "view-audit")
    events = audit_ops.list_events(
        services, model_id=found.id, actor=actor or None, action=action or None, since=_since(since)
    )
    context = _model_page(services, user, found, "audit")
    context.update(filters={"actor": actor, "action": action, "since": since})
    return _audit_response(request, services, events, format, context)


@router.get("/audit", summary="Every audit event (admins)")
def server_audit_page(
    request: Request,
    services: ServicesDep,
    user: SessionUser,
    actor: str = "",
    action: str = "",
    since: str = "",
    format: str = "html",
) -> Response:
    events = audit_ops.list_server_events(
        services, user, actor=actor or None, action=action or None, since=_since(since)
    )
    context = {
        **user_context(user),
        "model": None,
        "filters": {"actor": actor, "action": action, "since": since},
    }
    return _audit_response(request, services, events, format, context)


@router.get("/groups", summary="Groups and their members (admins change them)")
def groups_page(request: Request, services: ServicesDep, user: SessionUser) -> Response:
    context = {**user_context(user), "groups": groups.list_groups(services)}
    return render(request, services, "groups.html", context)

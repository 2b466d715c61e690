"""The UI end to end in real headless Chromium against a real ``modelhost serve``, signed in
as admin, owner, editor and viewer. The tests share one server and one browser and run in
order: each builds on what the previous ones did, as a user's session would. A screenshot of
each page goes to test-artifacts/ui/."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.helpers import PROJECTS, Server, running_server, wait_until
from tests.ui.conftest import shot

pytestmark = pytest.mark.integration

PASSWORDS = {"ui-owner": "owner-password", "ui-editor": "editor-password"}
PASSWORDS["ui-viewer"] = "viewer-password"
PASSWORDS["ui-guest"] = "guest-password"


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("ui") / "home") as server:
        for name, password in PASSWORDS.items():
            server.client().add_user(name, password)
        yield server


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "calc.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
    path.write_bytes(buffer.getvalue())
    return path


class Pages:
    """One signed-in browser page per role, opened on first use."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.browser = browser
        self.server = server
        self.pages: dict[str, Page] = {}

    def __getitem__(self, role: str) -> Page:
        if role not in self.pages:
            context = self.browser.new_context(base_url=self.server.url)
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto("/ui/models")
            expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))
            if role == "admin":
                page.get_by_text("Sign in with an API key instead").click()
                page.get_by_label("API key").fill(self.server.api_key)
                page.get_by_role("button", name="Sign in with the key").click()
            else:
                page.get_by_label("User name").fill(f"ui-{role}")
                page.get_by_label("Password").fill(PASSWORDS[f"ui-{role}"])
                page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page).to_have_url(re.compile(r"/ui/models$"))
            self.pages[role] = page
        return self.pages[role]


@pytest.fixture(scope="module")
def pages(browser: Browser, ui_server: Server) -> Iterator[Pages]:
    opened = Pages(browser, ui_server)
    yield opened
    for page in opened.pages.values():
        page.context.close()


def flash(page: Page) -> str:
    return page.locator(".flash").first.inner_text()


def test_a_wrong_password_is_refused_in_plain_words(browser: Browser, ui_server: Server) -> None:
    context = browser.new_context(base_url=ui_server.url)
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    page.get_by_label("User name").fill("ui-owner")
    page.get_by_label("Password").fill("not-my-password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator(".flash.error")).to_have_text("The user name or password is wrong.")
    shot(page, "sign-in")
    context.close()


def test_the_owner_publishes_through_the_wizard_and_watches_the_build(
    pages: Pages, archive: Path
) -> None:
    page = pages["owner"]
    expect(page.get_by_text("There are no models you can see yet.")).to_be_visible()
    page.get_by_role("link", name="Publish a model").click()
    page.get_by_label("Name").fill("calc")
    page.get_by_label("Project archive (.tar.gz)").set_input_files(archive)
    page.get_by_label("File").fill("calc.py")
    page.get_by_label("Function").fill("nope")
    page.get_by_role("button", name="Publish").click()
    # The first instance is the import check: a missing function fails the version, in words.
    expect(page.locator("#version")).to_have_attribute("data-status", "failed", timeout=60_000)
    expect(page.locator("#build-log")).to_contain_text("nope")
    page.goto("/ui/publish?model=calc")
    shot(page, "publish")
    page.get_by_label("Project archive (.tar.gz)").set_input_files(archive)
    page.get_by_label("File").fill("calc.py")
    page.get_by_label("Function").fill("add")
    page.get_by_label("What changed (optional)").fill("first working version")
    page.get_by_label("Example input (optional)").fill('{"data": {"x": 0, "y": 0}}')
    page.get_by_label("Environment", exact=True).fill("server")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator(".flash").first).to_contain_text("Version 2 of calc is building.")
    expect(page.locator("#version")).to_have_attribute("data-status", "running", timeout=60_000)
    expect(page.locator("#build-log")).to_contain_text("Entry point: calc.py:add")
    shot(page, "version")


def test_the_wizard_says_what_is_wrong_with_a_bad_upload(pages: Pages, archive: Path) -> None:
    page = pages["owner"]
    page.goto("/ui/publish")
    page.get_by_label("Name").fill("Bad Name")
    page.get_by_label("Project archive (.tar.gz)").set_input_files(archive)
    page.get_by_label("File").fill("calc.py")
    page.get_by_label("Function").fill("add")
    page.locator("#publish-form").evaluate("form => form.noValidate = true")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator(".flash.error")).to_contain_text("is not a valid model name")
    page.get_by_label("Name").fill("other")
    page.get_by_label("Project archive (.tar.gz)").set_input_files(archive)
    page.get_by_label("File").fill("missing.py")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator(".flash.error")).to_contain_text("The file 'missing.py' is not in")


def test_the_models_list_shows_and_searches_the_models(pages: Pages) -> None:
    page = pages["owner"]
    page.goto("/ui/models")
    row = page.locator("table.models tbody tr", has_text="calc")
    expect(row).to_contain_text("ui-owner")
    expect(row.locator(".status")).to_have_text("running")
    page.get_by_label("Search models").fill("nothing-like-this")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No model matches")).to_be_visible()
    page.get_by_label("Search models").fill("cal")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("table.models tbody tr")).to_have_count(1)
    shot(page, "models")


def test_the_owner_adds_an_editor_and_a_viewer(pages: Pages) -> None:
    page = pages["owner"]
    page.goto("/ui/models/calc/settings")
    for user, role in (("ui-editor", "editor"), ("ui-viewer", "viewer")):
        form = page.locator("#collaborators form.inline-form")
        form.get_by_label("User").fill(user)
        form.get_by_label("Role").select_option(role)
        form.get_by_role("button", name="Add or change").click()
        expect(page.locator(".flash")).to_have_text(f"{user} is now {role}.")
    form = page.locator("#collaborators form.inline-form")
    form.get_by_label("User").fill("nobody-here")
    form.get_by_role("button", name="Add or change").click()
    expect(page.locator(".flash.error")).to_contain_text("There is no user 'nobody-here'")
    expect(page.locator("table.collaborators")).to_contain_text("ui-viewer")


def test_the_tester_calls_the_model_and_shows_the_answer(pages: Pages) -> None:
    page = pages["editor"]
    page.goto("/ui/models/calc")
    body = page.get_by_label("Request body (JSON)")
    assert json.loads(body.input_value()) == {"data": {"x": 0, "y": 0}}  # the version's example
    expect(page.locator("#tester-skeleton")).to_have_count(0)
    expect(page.get_by_label("Access token")).to_have_count(0)
    body.fill('{"data": {"x": 2, "y": 3}}')
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#tester-status")).to_contain_text("200")
    expect(page.locator("#tester-status")).to_contain_text("function")
    assert json.loads(page.locator("#tester-response").inner_text())["result"] == 5
    body.fill('{"data": {"x": 2}}')
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#tester-status")).to_contain_text("400")
    expect(page.locator("#tester-status")).to_contain_text("add(x, y)")
    body.fill("{not json")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#tester-status")).to_contain_text("not valid JSON")
    shot(page, "overview")


def test_the_tester_runs_a_prediction_asynchronously_and_waits_for_its_result(
    pages: Pages,
) -> None:
    page = pages["editor"]
    page.goto("/ui/models/calc")
    body = page.get_by_label("Request body (JSON)")
    page.get_by_label("Run asynchronously").check()
    body.fill('{"data": {"x": 20, "y": 22}}')
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#tester-status")).to_contain_text("succeeded")
    answer = json.loads(page.locator("#tester-response").inner_text())
    assert answer["status"] == "succeeded"
    assert answer["result"] == 42
    body.fill('{"data": {"x": 2}}')
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#tester-status")).to_contain_text("failed")
    expect(page.locator("#tester-status")).to_contain_text("add(x, y)")
    # the prediction's own status (docs/api.md: http_status, 400 invalid_arguments), not the
    # 200 of the request that read it
    expect(page.locator("#tester-status")).to_contain_text(re.compile(r"^400 in \d+ ms"))
    body.fill("[1]")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#tester-status")).to_contain_text("400")
    expect(page.locator("#tester-status")).to_contain_text("'parameters' array")
    page.get_by_label("Run asynchronously").uncheck()


def test_the_api_docs_page_shows_the_typed_request_without_loading_anything_from_elsewhere(
    pages: Pages, ui_server: Server
) -> None:
    page = pages["viewer"]
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/ui/models/calc")
    page.locator("#docs-link").click()
    expect(page).to_have_url(re.compile(r"/ui/models/calc/docs$"))
    expect(page.locator("#docs-url")).to_have_text(f"{ui_server.url}/models/calc/latest/model")
    rows = page.locator("#docs-keywords tbody tr")
    expect(rows).to_have_count(2)  # add(x, y): two required arguments without hints
    expect(rows.nth(0)).to_contain_text("x")
    expect(rows.nth(0)).to_contain_text("any JSON")
    expect(rows.nth(0)).to_contain_text("yes")
    assert json.loads(page.locator("#docs-example").inner_text()) == {"data": {"x": 0, "y": 0}}
    statuses = page.locator("#docs-errors tbody td[data-label=Status]").all_inner_texts()
    # docs/api.md: every status an invocation answers (never 403)
    assert statuses == ["400", "401", "404", "405", "413", "415", "429", "500", "502", "503", "504"]
    page.get_by_label("Route").select_option("versions/2")  # version 1 failed to load
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#docs-url")).to_have_text(f"{ui_server.url}/models/calc/versions/2/model")
    page.get_by_text("Show the document").click()
    document = json.loads(page.locator("#docs-json").inner_text())
    assert document["openapi"].startswith("3.1")
    assert "/models/calc/versions/2/model" in document["paths"]
    shot(page, "api-docs")
    assert requested
    assert all(url.startswith(ui_server.url) for url in requested), requested


def _run_snippet(page: Page, token: str | None = None) -> dict[str, object]:
    page.get_by_role("tab", name="curl").click()
    page.locator("[data-copy=snippet-curl]").click()
    expect(page.locator("[data-copy=snippet-curl]")).not_to_have_text("Copy")
    command = page.locator("#snippet-curl").inner_text()
    if token:
        command = command.replace("YOUR_TOKEN", token)
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_metrics_page_draws_the_calls_as_charts(pages: Pages) -> None:
    page = pages["editor"]
    page.goto("/ui/models/calc")
    page.get_by_role("link", name="Metrics").click()
    expect(page.locator("svg.chart")).to_have_count(4)
    expect(page.locator("svg.chart polyline, svg.chart circle").first).to_be_attached()
    row = page.locator("table.metrics tbody tr", has_text="2")
    expect(row.first).to_be_visible()
    assert int(row.first.locator("td").nth(1).inner_text()) >= 2  # the two calls the tester sent
    shot(page, "metrics")
    page.goto("/ui/models")
    rate = page.locator("table.models tbody tr", has_text="calc").locator("td").nth(7)
    assert float(rate.inner_text()) > 0


def test_the_curl_snippet_copied_from_the_page_runs(pages: Pages) -> None:
    page = pages["viewer"]
    page.goto("/ui/models/calc")
    for tab in ("Python (requests)", "JavaScript (fetch)", "R (httr)"):
        page.get_by_role("tab", name=tab).click()
        expect(page.locator("[data-snippet-panel]:visible pre")).to_contain_text("/latest/model")
    answer = _run_snippet(page)
    assert answer["result"] == 0
    twin = page.request.get("/ui/models/calc", headers={"Accept": "application/json"}).json()
    assert twin["snippets"]["curl"] == page.locator("#snippet-curl").inner_text()
    assert twin["sample"] == {"data": {"x": 0, "y": 0}}
    assert twin["can"]["view-logs"] is True
    assert twin["can"]["deploy"] is False
    assert answer["release"]["model_version_number"] == 2  # type: ignore[index]


def test_the_admin_makes_a_group_and_the_owner_gives_it_a_role(pages: Pages) -> None:
    admin = pages["admin"]
    admin.get_by_role("link", name="Groups").click()
    admin.get_by_label("New group").fill("ui-team")
    admin.get_by_role("button", name="Create group").click()
    expect(admin.locator(".flash")).to_have_text("Group ui-team created.")
    admin.get_by_label("Add user to ui-team").fill("ui-guest")
    admin.get_by_role("button", name="Add", exact=True).click()
    expect(admin.locator(".flash")).to_have_text("ui-guest is in ui-team.")
    expect(admin.locator("tr[data-group='ui-team']")).to_contain_text("ui-guest")
    shot(admin, "groups")

    guest = pages["guest"]
    guest.goto("/ui/models/calc")
    expect(guest.locator(".flash.error")).to_contain_text("There is no model 'calc'")

    owner = pages["owner"]
    owner.goto("/ui/models/calc/settings")
    form = owner.locator("#group-role-form")
    form.get_by_label("Group").fill("ui-team")
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Give the group this role").click()
    expect(owner.locator(".flash")).to_have_text("The group ui-team is now viewer.")
    expect(owner.locator("table.group-roles")).to_contain_text("ui-team")

    # A member sees the model through the group, and may use the tester.
    guest.goto("/ui/models/calc")
    expect(guest.get_by_text("your role: viewer")).to_be_visible()
    guest.get_by_role("button", name="Send").click()
    expect(guest.locator("#tester-status")).to_contain_text("200")

    owner.locator("table.group-roles tr", has_text="ui-team").get_by_role("button").click()
    expect(owner.locator(".flash")).to_have_text(
        "The group ui-team no longer has a role on the model."
    )
    guest.goto("/ui/models/calc")
    expect(guest.locator(".flash.error")).to_contain_text("There is no model 'calc'")

    admin.goto("/ui/groups")
    admin.get_by_role("button", name="Remove ui-guest from ui-team").click()
    expect(admin.locator(".flash")).to_have_text("ui-guest is no longer in ui-team.")
    admin.locator("tr[data-group='ui-team']").get_by_role("button", name="Delete").click()
    expect(admin.locator(".flash")).to_contain_text("Group ui-team deleted")
    expect(admin.get_by_text("No groups yet.")).to_be_visible()


def test_the_owner_requires_a_token_then_creates_and_revokes_one(
    pages: Pages, ui_server: Server
) -> None:
    page = pages["owner"]
    page.goto("/ui/models/calc/settings")
    page.locator("#access").get_by_label("Invocation").select_option("token")
    page.get_by_role("button", name="Save access").click()
    expect(page.locator(".flash")).to_contain_text("invocation is token")
    page.locator("#tokens").get_by_label("Who is it for?").fill("browser-test")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    assert secret.startswith("mht_")
    shot(page, "settings")
    page.reload()
    assert secret not in page.content()  # shown once only
    url = f"{ui_server.url}/models/calc/latest/model"
    wait_until(lambda: httpx.post(url, json={"data": {"x": 1, "y": 1}}).status_code == 401)

    # The tester needs no token: it calls through the session, and the audit log says so.
    page.goto("/ui/models/calc")
    page.get_by_label("Request body (JSON)").fill('{"data": {"x": 1, "y": 1}}')
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#tester-status")).to_contain_text("200")
    assert json.loads(page.locator("#tester-response").inner_text())["result"] == 2
    events = ui_server.client().audit("calc", action="test-call")
    assert events[0]["actor"] == "ui-owner"
    assert events[0]["detail"]["status"] == 200
    assert _run_snippet(page, secret)["result"] == 0

    page.goto("/ui/models/calc/settings")
    row = page.locator("table.tokens tr", has_text="browser-test")
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".flash")).to_contain_text("The token is revoked")
    expect(page.locator("table.tokens tr", has_text="browser-test")).to_contain_text("revoked")
    wait_until(
        lambda: (
            httpx.post(url, json={"data": {"x": 1, "y": 1}}, auth=(secret, secret)).status_code
            == 401
        )
    )


def test_the_editor_publishes_again_and_rolls_back(pages: Pages, archive: Path) -> None:
    page = pages["editor"]
    page.goto("/ui/models/calc")
    page.get_by_role("link", name="New version").click()
    page.get_by_label("Project archive (.tar.gz)").set_input_files(archive)
    page.get_by_label("File").fill("calc.py")
    page.get_by_label("Function").fill("add")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#version")).to_have_attribute("data-status", "running", timeout=60_000)
    page.goto("/ui/models/calc/versions")
    expect(page.locator("tr[data-version='3']")).to_contain_text("latest")
    page.get_by_role("button", name="Roll back").click()
    expect(page.locator(".flash")).to_contain_text("from version 3 to version 2")

    def serving_two() -> bool:
        page.reload()
        return "latest" in page.locator("tr[data-version='2']").inner_text()

    wait_until(serving_two, timeout=30)
    form = page.locator("form.inline-form", has_text="Set label")
    form.get_by_label("Label").fill("staging")
    form.get_by_label("Version", exact=True).fill("2")
    form.get_by_label("Canary version").fill("3")
    form.get_by_label("Canary weight %").fill("10")
    form.get_by_role("button", name="Set label").click()
    expect(page.locator(".flash")).to_have_text("Label staging -> version 2, 10% to version 3.")
    expect(page.locator("table.labels")).to_contain_text("staging")
    shot(page, "versions")
    page.goto("/ui/models/calc/instances")
    page.get_by_role("button", name="Stop model").click()
    expect(page.locator(".flash")).to_have_text("The model stops.")
    page.get_by_role("button", name="Start model").click()
    expect(page.locator(".flash")).to_have_text("The model starts.")
    # Settings an editor may change are there; owner-only ones are not.
    page.goto("/ui/models/calc/settings")
    expect(page.locator("#general")).to_be_visible()
    expect(page.locator("#tokens")).to_be_visible()
    expect(page.locator("#access")).to_have_count(0)
    expect(page.locator("#ownership")).to_have_count(0)


def test_the_viewer_sees_versions_and_a_live_log_but_no_buttons(
    pages: Pages, ui_server: Server
) -> None:
    page = pages["viewer"]
    page.goto("/ui/models/calc/versions")
    expect(page.locator("table.versions tbody tr")).to_have_count(3)
    expect(page.get_by_role("button", name="Roll back")).to_have_count(0)
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
    expect(page.get_by_role("link", name="New version")).to_have_count(0)
    page.goto("/ui/models/calc/settings")
    for section in ("#general", "#tokens", "#access", "#ownership"):
        expect(page.locator(section)).to_have_count(0)
    expect(page.locator("#variables")).to_be_visible()
    page.goto("/ui/models/calc/instances")
    expect(page.locator("table.instances")).to_contain_text("ready")
    before = page.locator("#log [data-time]").count()
    ui_server.client().restart("calc")  # new instances write new lines while we watch
    expect(page.locator("#log")).to_contain_text("starting instance", timeout=15_000)
    wait_until(lambda: page.locator("#log [data-time]").count() > before, timeout=15)
    shot(page, "instances")
    page.goto("/ui/models/calc/audit")
    expect(page.locator("table.audit")).to_contain_text("rollback")
    shot(page, "model-audit")
    page.goto("/ui/publish?model=calc")  # the wizard refuses a new version, in words
    expect(page.locator(".flash.error")).to_contain_text("publish needs editor or higher")


def test_the_admin_reads_filters_and_exports_the_server_wide_audit_log(
    pages: Pages, ui_server: Server
) -> None:
    page = pages["admin"]
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action").fill("token-revoke")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("ui-owner")
    shot(page, "audit")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0].startswith("id,time,actor,action")
    assert len(text.splitlines()) == 2
    assert "token-revoke" in text
    for role in ("owner", "viewer"):
        pages[role].goto("/ui/audit")
        expect(pages[role].locator(".flash.error")).to_contain_text("Only server admins")


def test_the_admin_publishes_from_a_directory_on_the_server(pages: Pages, tmp_path: Path) -> None:
    project = tmp_path / "calc"
    (project / "notes").mkdir(parents=True)
    (project / "calc.py").write_text((PROJECTS / "calc" / "calc.py").read_text())
    (project / "README.md").write_text("calc\n")
    (project / "notes" / "todo.txt").write_text("more\n")
    page = pages["admin"]
    page.goto("/ui/publish")
    page.get_by_label("Name").fill("calc-path")
    page.get_by_label("…or a directory on the server (admins)").fill(str(project))
    page.get_by_label("File").fill("calc.py")
    page.get_by_label("Function").fill("add")
    page.get_by_label("Log each call's input and output to the instance log").check()
    page.get_by_label("Exclude patterns (optional)").fill("*.md\nnotes/")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#version")).to_have_attribute("data-status", "running", timeout=60_000)
    twin = page.request.get(
        "/ui/models/calc-path/versions/1", headers={"Accept": "application/json"}
    )
    assert twin.json()["version"]["bundle_files"] == 1  # calc.py, without README.md or notes/
    # Without an example, the tester starts from a skeleton of the signature, marked as such.
    page.goto("/ui/models/calc-path")
    body = json.loads(page.get_by_label("Request body (JSON)").input_value())
    assert body == {"data": {"x": None, "y": None}}
    expect(page.locator("#tester-skeleton")).to_contain_text("replace each null")
    page.goto("/ui/models/calc-path/settings")
    expect(page.get_by_label("Log each call's input and output")).to_be_checked()
    page.goto("/ui/publish?model=calc-path")  # a new version keeps the model's choice
    expect(page.get_by_label("Log each call's input and output")).to_be_checked()
    pages["owner"].goto("/ui/publish")
    expect(pages["owner"].get_by_label("…or a directory on the server (admins)")).to_have_count(0)


def test_a_token_gets_limits_and_its_usage_shows_against_the_quota(
    pages: Pages, ui_server: Server
) -> None:
    ui_server.client().set_access("calc-path", invocation="token")
    page = pages["admin"]
    page.goto("/ui/models/calc-path/settings")
    tokens = page.locator("#tokens")
    tokens.get_by_label("Who is it for?").fill("metered")
    tokens.get_by_label("Rate").last.fill("50/fortnight")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator(".flash.error")).to_contain_text("'50/fortnight' is not a rate")

    tokens.get_by_label("Who is it for?").fill("metered")
    tokens.get_by_label("Rate").last.fill("50/s")
    tokens.get_by_label("Quota").last.fill("2/day")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    url = f"{ui_server.url}/models/calc-path/latest/model"
    for _ in range(2):
        answer = httpx.post(url, json={"data": {"x": 1, "y": 1}}, auth=(secret, secret))
        assert answer.status_code == 200, answer.text
    refused = httpx.post(url, json={"data": {"x": 1, "y": 1}}, auth=(secret, secret))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"

    page.goto("/ui/models/calc-path/settings")
    row = page.locator("table.tokens tr[data-token='metered']")
    expect(row.locator(".token-rate")).to_have_text("50/s")
    expect(row.locator(".token-usage")).to_contain_text("2 of 2 this day")
    row.get_by_text("Limits", exact=True).click()
    row.get_by_label("Quota").fill("5/day")
    row.get_by_role("button", name="Save limits").click()
    expect(page.locator(".flash")).to_contain_text("The limits of metered are saved")
    row = page.locator("table.tokens tr[data-token='metered']")
    expect(row.locator(".token-usage")).to_contain_text("2 of 5 this day")
    shot(page, "token-limits")
    answer = httpx.post(url, json={"data": {"x": 1, "y": 1}}, auth=(secret, secret))
    assert answer.status_code == 200, answer.text
    events = ui_server.client().audit("calc-path", action="token-update")
    assert events[0]["detail"]["quota"] == {"from": "2/day", "to": "5/day"}


def test_the_owner_uses_every_other_setting_and_version_action(pages: Pages) -> None:
    page = pages["owner"]
    page.goto("/ui/models/calc/settings")
    general = page.locator("#general")
    general.get_by_label("Description").fill("adds two numbers")
    general.get_by_label("Routing mode").select_option("advanced")
    # The select is wide enough for its longest choice (it was cut off: "advanced: latest…").
    room = general.get_by_label("Routing mode").evaluate(
        """select => {
            const probe = document.createElement("span");
            probe.style.font = getComputedStyle(select).font;
            probe.style.whiteSpace = "pre";
            probe.textContent = [...select.options].map(o => o.text)
                .reduce((a, b) => (b.length > a.length ? b : a));
            document.body.appendChild(probe);
            const needed = probe.getBoundingClientRect().width;
            probe.remove();
            return select.clientWidth - needed;
        }"""
    )
    assert room > 20, room  # the text, plus padding and the arrow
    general.get_by_label("Timeout per call (seconds)").fill("30")
    general.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_have_text("Settings saved.")
    expect(page.get_by_text("advanced routing")).to_be_visible()
    general.get_by_label("Instances per running version").fill("99")
    general.locator("form").evaluate("form => form.noValidate = true")  # past the browser's check
    general.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.error")).to_contain_text("A model runs 1 to")

    variables = page.locator("#variables")
    variables.get_by_label("Name").fill("SECRET_URL")
    variables.get_by_label("Value").fill("s3cr3t-value")
    variables.get_by_label("Secret (encrypted, never shown again)").check()
    variables.get_by_role("button", name="Set").click()
    expect(page.locator(".flash")).to_contain_text("SECRET_URL set (secret")
    expect(page.locator("table.env")).to_contain_text("(secret, write-only)")
    assert "s3cr3t-value" not in page.content()
    page.locator("table.env tr", has_text="SECRET_URL").get_by_role("button").click()
    expect(page.locator(".flash")).to_have_text("SECRET_URL removed; instances restart.")

    page.locator("#tokens").get_by_label("Who is it for?").fill("Bob's regen")
    page.get_by_role("button", name="Create token").click()
    first = page.locator("#new-token").inner_text()
    page.goto("/ui/models/calc/settings")
    page.locator("table.tokens tr", has_text="regen").get_by_role(
        "button", name="Regenerate"
    ).click()
    second = page.locator("#new-token").inner_text()
    assert second.startswith("mht_")
    assert second != first

    page.goto("/ui/models/calc/versions")
    page.get_by_role("button", name="Promote newest to prod").click()
    expect(page.locator(".flash")).to_have_text("prod now points at version 3.")
    page.locator("tr[data-version='2']").get_by_role("button", name="Deploy").click()
    expect(page.locator(".flash")).to_contain_text("moves to version 2")

    # In advanced routing the overview shows every route, and the canary's split.
    def every_route_shown() -> bool:
        page.goto("/ui/models/calc")
        text = page.locator("#serving-routes").inner_text()
        return (  # deploying in advanced routing moved prod; latest is the newest, to test
            "latest serves version 3" in text
            and "label prod serves version 2" in text
            and "label staging serves version 2 (90 %), version 3 (10 %)" in text
        )

    wait_until(every_route_shown, timeout=30)
    expect(page.get_by_text("Serving version")).to_have_count(0)
    page.goto("/ui/models/calc/versions")
    page.locator("table.labels tr", has_text="staging").get_by_role("button").click()
    expect(page.locator(".flash")).to_have_text("Label staging removed.")
    page.locator("tr[data-version='3']").get_by_role("button", name="Stop").click()
    expect(page.locator(".flash")).to_have_text("Version 3 stops.")

    def stopped() -> bool:
        page.reload()
        return page.locator("tr[data-version='3'] .status").inner_text() == "stopped"

    wait_until(stopped, timeout=30)
    page.locator("tr[data-version='3']").get_by_role("button", name="Start").click()
    expect(page.locator(".flash")).to_have_text("Version 3 starts.")
    page.goto("/ui/models/calc/instances")
    page.get_by_role("button", name="Restart all").click()
    expect(page.locator(".flash")).to_contain_text("Every instance is being replaced")

    page.goto("/ui/models/calc/settings")
    people = page.locator("#collaborators form.inline-form")
    people.get_by_label("User").fill("ui-guest")
    people.get_by_role("button", name="Add or change").click()
    expect(page.locator(".flash")).to_have_text("ui-guest is now viewer.")
    page.locator("table.collaborators tr", has_text="ui-guest").get_by_role("button").click()
    expect(page.locator(".flash")).to_have_text("ui-guest is no longer a collaborator.")
    page.locator("#ownership").get_by_label("New owner").fill("ui-editor")
    page.get_by_role("button", name="Transfer").click()
    expect(page.locator(".flash")).to_have_text(
        "ui-editor owns the model now; you stay on as editor."
    )
    expect(page.get_by_text("your role: editor")).to_be_visible()

    # The audit page shows text as written: an apostrophe, not \u0027.
    page.goto("/ui/models/calc/audit?action=token-create")
    expect(page.locator("table.audit")).to_contain_text("Bob's regen")
    assert "\\u0027" not in page.locator("table.audit").inner_text()

    admin = pages["admin"]
    admin.goto("/ui/models/calc-path/settings")
    admin.get_by_role("button", name="Unpublish").click()
    expect(admin.locator(".flash")).to_contain_text("The model is unpublished")
    expect(admin.locator("h1 .status")).to_have_text("unpublished")


def test_a_phone_gets_the_stacked_layout(browser: Browser, pages: Pages) -> None:
    cookies = pages["viewer"].context.cookies()
    context = browser.new_context(
        base_url=pages.server.url, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    context.add_cookies(cookies)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto("/ui/models")
    header = page.locator("table.models thead")
    assert header.evaluate("element => getComputedStyle(element).display") == "none"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing runs off the side of the screen
    shot(page, "models-phone")
    page.goto("/ui/models/calc")
    shot(page, "overview-phone")
    context.close()


def test_the_browser_finds_the_servers_icon(pages: Pages) -> None:
    page = pages["viewer"]
    page.goto("/ui/models")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    answer = page.request.get(icon or "")
    assert answer.status == 200
    assert answer.headers["content-type"] == "image/vnd.microsoft.icon"
    assert answer.body()[:4] == b"\x00\x00\x01\x00"  # an ICO file


def test_signing_out_ends_the_session(pages: Pages) -> None:
    page = pages["viewer"]
    page.goto("/ui/models")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator(".flash")).to_have_text("You are signed out.")
    page.goto("/ui/models/calc")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=/ui/models/calc"))


def test_an_editor_changes_a_batching_versions_limits_on_the_settings_page(
    pages: Pages, ui_server: Server
) -> None:
    ui_server.client().publish(
        f"{PROJECTS / 'batching'}/batching.py:total",
        name="ui-batching",
        batch_max_size=8,
        batch_max_wait_ms=5,
    )
    page = pages["admin"]
    page.goto("/ui/models/ui-batching/settings")
    form = page.locator("#batching-1")
    expect(form.get_by_label("Largest batch")).to_have_value("8")
    form.get_by_label("Largest batch").fill("32")
    form.get_by_label("Longest wait (ms)").fill("2.5")
    form.get_by_role("button", name="Save").click()
    assert flash(page) == "Version 1's batching limits saved."
    assert ui_server.client().version("ui-batching", 1)["batch"] == {
        "max_size": 32,
        "max_wait_ms": 2.5,
    }
    page.goto("/ui/models/ui-batching/versions/1")
    expect(page.locator("#batching")).to_contain_text(
        "at most 32 calls a batch, waiting at most 2.5 ms"
    )
    page.goto("/ui/models/ui-batching/settings")
    size = page.locator("#batching-1").get_by_label("Largest batch")
    size.fill("5000")  # over the limit: the browser refuses to send the form
    assert size.evaluate("input => input.validity.rangeOverflow") is True


def test_the_tester_of_a_batching_version_sends_one_input_and_shows_its_own_result(
    pages: Pages,
) -> None:
    # ui-batching: total(inputs), published without an example by the test above
    page = pages["admin"]
    page.goto("/ui/models/ui-batching")
    body = page.get_by_label("Request body (JSON)")
    assert json.loads(body.input_value()) == {"data": {}}  # one input, not {"inputs": null}
    expect(page.locator("#tester-batching")).to_contain_text(
        "data object (a dict) or parameters array (a list) as one element of its list of inputs"
    )
    expect(page.locator("#tester-skeleton")).to_contain_text("placeholder for one call's input")
    expect(page.locator("#tester-skeleton")).to_contain_text("total(inputs)")
    for sent, result in [
        ('{"data": {"x": 2, "y": 3}}', {"sum": 5, "batch": 1}),
        ('{"parameters": [4, 5]}', {"sum": 9, "batch": 1}),
    ]:
        body.fill(sent)
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#tester-status")).to_contain_text("200")
        assert json.loads(page.locator("#tester-response").inner_text())["result"] == result
    # The curl snippet (a public model's), its one input filled in, runs with its comment.
    page.get_by_role("tab", name="curl").click()
    command = page.locator("#snippet-curl").inner_text()
    assert command.startswith("# total is a batching function: send one call's input.")
    command = command.replace('{"data": {}}', '{"data": {"x": 20, "y": 22}}')
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"sum": 42, "batch": 1}
    shot(page, "batching-tester")
    page.goto("/ui/models/ui-batching/docs")
    expect(page.locator("#docs-batching")).to_contain_text("at most 32 calls a batch")
    expect(page.locator("#docs-one-input")).to_contain_text("as one element of its list of inputs")
    expect(page.locator("#docs-keywords")).to_have_count(0)

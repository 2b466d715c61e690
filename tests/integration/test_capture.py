"""Prediction capture through a real server with two gateway processes (issue 19, point 5): a
capture of 10,000 calls is exported and drives a drift report in which the one shifted feature
stands out; from the CLI, the API and the Python client."""

from __future__ import annotations

import asyncio
import csv
import json
import random
import stat
from collections import Counter
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration

CALLS = 10_000
CONNECTIONS = 16


def _features(rng: random.Random, shift: float) -> dict[str, float]:
    """x ~ N(shift, 1), y ~ N(5, 2) and z ~ U(0, 10): only x moves."""
    return {
        "x": round(rng.gauss(shift, 1.0), 6),
        "y": round(rng.gauss(5.0, 2.0), 6),
        "z": round(rng.uniform(0.0, 10.0), 6),
    }


async def _call_many(port: int, path: str, bodies: list[bytes]) -> Counter[int]:
    """POST each body on a few keep-alive connections, one call at a time on each: plain HTTP/1.1
    on asyncio streams, so the client costs little next to the server."""
    statuses: Counter[int] = Counter()
    queue = list(reversed(bodies))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                body = queue.pop()
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                    f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                )
                await reader.readexactly(length)
                statuses[int(lines[0].split()[1])] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return statuses


def _psi(report: dict[str, object]) -> dict[str, float]:
    features = report["features"]
    assert isinstance(features, list)
    return {f["name"]: f["psi"] for f in features}


def test_ten_thousand_captured_calls_are_exported_and_show_the_shifted_feature(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work = tmp_path_factory.mktemp("capture")
    home = work / "home"
    with running_server(home, {"MODELHOST_GATEWAY_PROCESSES": "2"}) as server:
        client = server.client()
        client.publish(PROJECTS / "features", file="score.py", function="score", name="captured")
        client.update_model("captured", instance_count=2)
        wait_until(lambda: [i["state"] for i in client.instances("captured")] == ["ready"] * 2, 60)
        assert client.model("captured")["capture"] is False  # off by default

        shown = server.cli("models", "update", "captured", "--capture", check=True).stdout
        assert "capture on (1 of calls)" in shown
        [event] = client.audit("captured", action="capture-on")
        assert event["outcome"] == "success"

        rng = random.Random(19)
        sent = [_features(rng, shift=1.0) for _ in range(CALLS)]
        bodies = [json.dumps({"data": features}).encode() for features in sent]
        statuses = asyncio.run(_call_many(server.port, "/models/captured/latest/model", bodies))
        assert statuses == {200: CALLS}

        exported = work / "captures.parquet"

        def all_written() -> bool:
            client.export_captures("captured", exported, since="1h")
            return pq.read_metadata(exported).num_rows >= CALLS

        wait_until(all_written, timeout=30, interval=0.5)  # written about every second
        table = pq.read_table(exported)
        assert table.num_rows == CALLS  # each call once, whichever process answered it
        assert len(set(table["request_id"].to_pylist())) == CALLS
        assert set(table["version"].to_pylist()) == {1}
        inputs = [json.loads(text)["data"] for text in table["input"].to_pylist()]
        assert Counter(json.dumps(i, sort_keys=True) for i in inputs) == Counter(
            json.dumps(s, sort_keys=True) for s in sent
        )
        for given, output in zip(inputs[:50], table["output"].to_pylist()[:50], strict=True):
            assert json.loads(output) == pytest.approx(given["x"] + given["y"] + given["z"])

        # Only the server's user may read them.
        root = home / "captures"
        parts = list(root.rglob("part-*.parquet"))
        assert parts
        for path in parts:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700

        # The CLI's CSV export holds the same calls.
        as_csv = work / "captures.csv"
        server.cli(
            "captures", "export", "captured", "--since", "1h", "--version", "1",
            "--format", "csv", "-o", str(as_csv), check=True,
        )  # fmt: skip
        with as_csv.open(newline="") as file:
            rows = list(csv.DictReader(file))
        assert len(rows) == CALLS
        assert set(rows[0]) == {"time", "request_id", "version", "version_id", "input", "output"}
        assert len(client.audit("captured", action="capture-export")) >= 2  # each export

        # A reference drawn as the calls were, but without the shift.
        reference = work / "reference.csv"
        with reference.open("w", newline="") as file:
            writer = csv.DictWriter(file, ["x", "y", "z", "label"])
            writer.writeheader()
            reference_rng = random.Random(5)
            for _ in range(CALLS):
                writer.writerow({**_features(reference_rng, shift=0.0), "label": "a"})
        printed = server.cli(
            "captures", "drift", "captured", "--version", "1", "--reference", str(reference),
            "--format", "json", check=True,
        ).stdout  # fmt: skip
        report = json.loads(printed)
        psi = _psi(report)
        assert set(psi) == {"x", "y", "z"}
        assert psi["x"] > 0.2
        assert psi["y"] < 0.05
        assert psi["z"] < 0.05
        assert [f["name"] for f in report["features"] if f["drifted"]] == ["x"]
        assert report["captured_rows"] == CALLS
        bins = report["features"][0]["bins"]
        assert len(bins) == 10
        assert sum(b["reference"] for b in bins) == CALLS
        assert sum(b["captured"] for b in bins) == CALLS
        text = server.cli(
            "captures", "drift", "captured", "--reference", str(reference), check=True
        ).stdout
        assert [line.split()[0] for line in text.splitlines() if "DRIFT" in line] == ["x"]

        # The Python client asks for the same report from a Parquet reference.
        as_parquet = work / "reference.parquet"
        from pyarrow import csv as pcsv

        pq.write_table(pcsv.read_csv(reference), as_parquet)
        assert _psi(client.drift("captured", version=1, reference=as_parquet)) == psi

        scraped = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.api_key}"}
        ).text
        assert 'modelhost_capture_dropped_total{model="captured"} 0.0' in scraped

        client.update_model("captured", capture=False)
        [off] = client.audit("captured", action="capture-off")
        assert off["outcome"] == "success"


def test_bad_capture_requests_get_messages_that_say_what_to_do(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="capture-checked")
    api = f"{server.url}/api/v1/models/capture-checked"
    auth = {"Authorization": f"Bearer {server.api_key}"}

    def error(answer: httpx.Response, status: int) -> str:
        assert answer.status_code == status, answer.text
        return str(answer.json()["error"]["message"])

    for share in (0, 1.5, -0.1):
        message = error(httpx.patch(api, json={"capture_share": share}, headers=auth), 400)
        assert message.startswith("capture_share must be more than 0 and at most 1")
    assert "capture is off" in error(httpx.get(f"{api}/captures", headers=auth), 409)
    client.update_model("capture-checked", capture=True, capture_share=0.5)
    assert client.model("capture-checked")["capture_share"] == 0.5
    message = error(httpx.get(f"{api}/captures", params={"since": "soon"}, headers=auth), 400)
    assert "such as 2026-12-01" in message
    message = error(httpx.get(f"{api}/captures", params={"format": "xml"}, headers=auth), 400)
    assert message == "Unknown format 'xml'; use parquet or csv."
    drift = f"{api}/captures/drift"
    assert "was captured yet" in error(httpx.post(drift, headers=auth), 409)
    assert "Unknown reference" in error(
        httpx.post(drift, params={"reference": "last-week"}, headers=auth), 400
    )

    model_id = client.model("capture-checked")["id"]

    def captured() -> bool:  # this model's calls: the server holds other tests' captures too
        assert server.invoke("capture-checked", {"data": {"x": 1, "y": 2}}).status_code == 200
        found = (server.home / "captures").glob(f"model={model_id}/version=1/hour=*/part-*")
        return bool(list(found))

    wait_until(captured, timeout=30, interval=0.3)
    message = error(httpx.post(drift, content=b"\x00\x01garbage", headers=auth), 400)
    assert message.startswith("The reference")
    message = error(httpx.post(drift, content=b"name\nabc\n", headers=auth), 400)
    assert message.startswith("The reference has no numeric column")
    message = error(httpx.post(drift, content=b"w\n1\n2\n", headers=auth), 400)
    assert message.startswith("No feature is in both the reference (w) and the captured inputs")
    message = error(httpx.post(drift, params={"reference": "first-day"}, headers=auth), 409)
    assert "only within its first day" in message
    failed = server.cli("captures", "drift", "capture-checked")
    assert failed.returncode == 2
    assert "Give one of --reference FILE or --first-day." in failed.stderr
    # docs/cli.md: without --since, everything kept (as the API's export without since)
    everything = tmp_path / "all.csv"
    server.cli(
        "captures", "export", "capture-checked", "--format", "csv", "-o", str(everything),
        check=True,
    )  # fmt: skip
    with everything.open(newline="") as file:
        assert list(csv.DictReader(file))

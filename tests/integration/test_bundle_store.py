"""A server whose bundles live in an S3-compatible object store (moto's server, on loopback)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.helpers import PROJECTS, running_server

pytestmark = pytest.mark.integration

BUCKET = "modelhost-bundles"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3() -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1 with an empty bucket; its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _objects(url: str) -> list[str]:
    listed = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).list_objects_v2(Bucket=BUCKET)
    return [item["Key"] for item in listed.get("Contents", [])]


def test_bundles_go_to_s3_and_a_server_that_lost_its_disk_copy_fetches_them(
    tmp_path: Path, s3: str
) -> None:
    env = {
        "MODELHOST_BUNDLE_STORE": f"s3://{BUCKET}/bundles",
        "FSSPEC_S3_ENDPOINT_URL": s3,
        **CREDENTIALS,
    }
    home = tmp_path / "home"
    with running_server(home, env) as server:
        version = server.client().publish(
            PROJECTS / "calc", file="calc.py", function="add", name="calc"
        )
        assert _objects(s3) == [f"bundles/{version['bundle_sha256']}.tar"]
    # The local copies are gone (another host, or a lost disk): the bundle comes back from S3.
    shutil.rmtree(home / "bundles")
    shutil.rmtree(home / "work")
    with running_server(home, env) as server:
        assert server.invoke("calc", {"data": {"x": 2, "y": 3}}).json()["result"] == 5
        assert (home / "bundles" / f"{version['bundle_sha256']}.tar").is_file()


def test_a_server_whose_bundle_store_is_unreachable_refuses_to_start(
    tmp_path: Path, s3: str
) -> None:
    env = {
        "MODELHOST_BUNDLE_STORE": "s3://no-such-bucket/bundles",
        "FSSPEC_S3_ENDPOINT_URL": s3,
        **CREDENTIALS,
    }
    with pytest.raises(RuntimeError) as failed, running_server(tmp_path / "home", env):
        pass
    assert "bundle_store 's3://no-such-bucket/bundles' is not reachable" in str(failed.value)

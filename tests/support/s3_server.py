"""An S3 API server on loopback (moto in server mode), one per test session: the fixtures.

`s3_server` starts moto's `ThreadedMotoServer` on 127.0.0.1 on a free port, creates the bucket
`prefs-bucket` and stops the server when the session ends. `s3` points a test at it: the
standard `AWS_ENDPOINT_URL` and dummy `AWS_*` credentials are set in the environment (so
subprocesses and Ray workers started by the test inherit them) and it yields a fresh
`s3://prefs-bucket/<test>-<id>` folder; `s3_env` does the same for a whole module (a cluster a
module fixture starts). No request leaves this machine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from support.ports import free_ports

BUCKET = "prefs-bucket"  # moto wants a valid S3 bucket name


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def s3_server():
    import boto3
    from moto.server import ThreadedMotoServer

    (port,) = free_ports()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield S3Server(endpoint, BUCKET, env)
    finally:
        server.stop()


def point_at(server: S3Server, patch: pytest.MonkeyPatch) -> None:
    """This process's environment (and so its subprocesses') pointed at the server."""
    for name, value in server.env.items():
        patch.setenv(name, value)
    patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    patch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def s3_env(s3_server):
    """The server's endpoint and keys in the environment for a whole module (a cluster started by a
    module fixture reads and writes S3, and so do the module's tests); yields them, for the nodes."""
    with pytest.MonkeyPatch.context() as patch:
        point_at(s3_server, patch)
        yield s3_server.env


@pytest.fixture
def s3(s3_server, monkeypatch, request) -> str:
    """A fresh folder URI on the loopback S3 server, with the environment pointing at it."""
    point_at(s3_server, monkeypatch)
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"s3://{s3_server.bucket}/{test}-{uuid.uuid4().hex[:8]}"

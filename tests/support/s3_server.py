"""An S3 API server on loopback (moto in server mode), one per test session: the fixtures.

`s3_server` starts moto's `ThreadedMotoServer` on 127.0.0.1 on a free port, creates the bucket
`prefs-bucket` and stops the server when the session ends. `s3` points a test at it: the
standard `AWS_ENDPOINT_URL` and dummy `AWS_*` credentials are set in the environment (so
subprocesses and Ray workers started by the test inherit them) and it yields a fresh
`s3://prefs-bucket/<test>-<id>` folder. No request leaves this machine.
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


@pytest.fixture
def s3(s3_server, monkeypatch, request) -> str:
    """A fresh folder URI on the loopback S3 server, with the environment pointing at it."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"s3://{s3_server.bucket}/{test}-{uuid.uuid4().hex[:8]}"

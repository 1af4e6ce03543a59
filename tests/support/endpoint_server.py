"""A small OpenAI-compatible chat server for the endpoint's fault tests (stdlib http.server in a thread).

Each POST to /v1/chat/completions takes the next cue from the script (or the default when the
script is empty): a status, a body, headers and a delay. It records every request's body and
Authorization header and the most requests it held open at once.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Cue:
    status: int = 200
    body: dict | str | None = None  # None with 200: an answer with one choice per `n`, usage included
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    choices: int | None = None  # a 200 answer's number of choices (default: the request's n)


def answer(n: int, text: str = "ok") -> dict:
    return {"choices": [{"index": i, "message": {"role": "assistant", "content": f"{text} {i}"},
                         "finish_reason": "stop"} for i in range(n)],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3 * n}}


def error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}


class FakeEndpoint:
    def __init__(self, default: Cue | None = None):
        self.script: list[Cue] = []
        self.default = default or Cue()
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.open = self.max_open = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    cue = server.script.pop(0) if server.script else server.default
                    server.open += 1
                    server.max_open = max(server.max_open, server.open)
                try:
                    time.sleep(cue.delay)
                    payload = cue.body if cue.body is not None else answer(cue.choices or body.get("n", 1))
                    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                    self.send_response(cue.status)
                    for k, v in cue.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass
                finally:
                    with server.lock:
                        server.open -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

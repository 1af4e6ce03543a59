"""A model behind an OpenAI-compatible chat API as an engine: `EndpointEngine.chat(requests)`.

It speaks `POST {base_url}/chat/completions` (vLLM's server, hosted APIs, gateways) over aiohttp
(already installed with Ray's dashboard), with each request's own sampling, `n` and JSON schema,
and implements the same async `chat` as the local engine, so the tasks run on it unchanged.

Rules (the HTTP side is in `endpoint_rules.py`):
- **Retries.** 429, 5xx, timeouts and lost connections are retried up to `retries` times, after
  the server's `Retry-After` or an exponential backoff.
- **Structured output.** A request with a schema asks for `response_format: json_schema`; a
  server that refuses it (400 about the schema) gets `json_object`, then no structured output,
  for the rest of the run: the task's parser validates every answer as it does locally.
  `n` is sent as it is; a server that returns fewer choices is asked again for the rest.
- **A request that still fails** gives a `Result` with `failed` set (the HTTP status and the
  server's words): its row is rejected as `request_failed` with that detail, the other rows go on.
- **Errors that fail every row** (401, 403, 404, no key on the worker, or more failed requests
  among the last 20 than `max_failure_rate` x 20: by default the 11th) raise `EndpointStopped`: the stage marks the
  batch, which is then neither written nor committed, and the run stops with the message (run
  it again to resume once the cause is fixed). Once stopped, every later call raises at once.
- **In flight.** An endpoint's stage has one actor (`EndpointModel.engine`), whose engine holds at
  most `max_in_flight` requests open (a semaphore); a model whose roles need two stages splits
  the limit between them (`plan.in_flight_shares`). So the limit holds for the endpoint as a
  whole: no coordination between actors is needed, and one async actor keeps hundreds of
  requests open if asked to.
- **The key** is read here, on the worker, from the environment variable named by `api_key_env`
  or the file at `api_key_file`; it is sent only in the Authorization header and redacted from
  every message this module makes.
- **Counts** (`usage()`): HTTP requests, retries, failed requests, schema fallbacks, HTTP errors
  by status, prompt and completion tokens from the server's `usage`, and the cost when prices
  are set. The stage writes them to its stats file; the summary and manifest sum them.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, deque

from prefgen.models.declarations import EndpointModel
from prefgen.engines.endpoint_rules import (
    FATAL_STATUSES,
    SCHEMA_LEVELS,
    backoff_s,
    classify,
    cost,
    error_message,
    redact,
    request_body,
    retry_after_s,
)
from prefgen.engines.engine import Request, Result

FAILURE_WINDOW = 20  # final outcomes the failure rate is taken over


class EndpointStopped(RuntimeError):
    """An endpoint error that would fail every row: the run stops, the folder stays resumable."""


def read_key(spec: EndpointModel) -> tuple[str | None, str | None]:
    """(key, None), or (None, why it cannot be had). No key configured: (None, None), no header sent."""
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env, "").strip()
        if not key:
            return None, (f"environment variable {spec.api_key_env} (api_key_env) is not set on this worker; "
                          "set it on every node (cluster.yaml, a Kubernetes Secret)")
        return key, None
    if spec.api_key_file:
        try:
            with open(os.path.expanduser(spec.api_key_file)) as f:
                key = f.read().strip()
        except OSError as exc:
            return None, f"cannot read api_key_file {spec.api_key_file}: {exc.strerror}"
        return (key, None) if key else (None, f"api_key_file {spec.api_key_file} is empty")
    return None, None


class EndpointEngine:
    """An OpenAI-compatible chat endpoint, called from the stage actor's event loop."""

    def __init__(self, spec: EndpointModel, name: str, max_in_flight: int | None = None):
        self.spec, self.name = spec, name
        self.limit = max_in_flight or spec.max_in_flight
        self._key, why = read_key(spec)
        self.stopped: str | None = self._where(f"no API key: {why}") if why else None
        self.level = 0  # index into SCHEMA_LEVELS: how much structured output the server takes
        self.counts = Counter()
        self.http_errors = Counter()
        self.recent: deque[bool] = deque(maxlen=FAILURE_WINDOW)  # final outcomes, True = failed
        self._session = None
        self._gate: asyncio.Semaphore | None = None

    def _where(self, message: str) -> str:
        return redact(f"endpoint {self.name} ({self.spec.model} at {self.spec.base_url}): {message}", self._key)

    def _stop(self, message: str) -> None:
        self.stopped = self.stopped or self._where(message)
        raise EndpointStopped(self.stopped)

    async def _post(self, body: dict) -> tuple[int | None, dict | str, str | None]:
        """One HTTP request: (status, parsed JSON or text, Retry-After); status None on a timeout or lost connection."""
        import aiohttp

        if self._session is None:
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            self._session = aiohttp.ClientSession(headers=headers,
                                                  timeout=aiohttp.ClientTimeout(total=self.spec.timeout_s))
            self._gate = asyncio.Semaphore(self.limit)
        try:
            async with self._gate:
                if self.stopped:  # stopped while this request waited for its turn
                    raise EndpointStopped(self.stopped)
                self.counts["requests"] += 1
                async with self._session.post(f"{self.spec.base_url}/chat/completions", json=body) as resp:
                    text = await resp.text()
                    retry_after = resp.headers.get("Retry-After")
                    status = resp.status
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            self.http_errors[kind] += 1
            return None, f"{kind} after {self.spec.timeout_s:g} s" if kind == "timeout" else f"{kind}: {exc}", None
        if status != 200:
            self.http_errors[str(status)] += 1
            return status, text, retry_after
        try:
            return status, json.loads(text), retry_after
        except ValueError:
            return 502, f"answer is not JSON: {text[:200]}", None  # a broken proxy: retried like a 5xx

    async def _complete(self, request: Request, n: int) -> Result:
        """One chat completion with its retries; `n` choices asked for."""
        attempt, schema = 0, request.json_schema
        while True:
            level = SCHEMA_LEVELS[self.level]
            body = request_body(self.spec.model, request.messages, request.sampling, n, schema, level)
            status, answer, retry_after = await self._post(body)
            message = "" if isinstance(answer, dict) else error_message(answer)
            action = classify(status, message, "response_format" in body)
            if action == "ok":
                return self._result(answer)
            if action == "simplify":
                self.counts["schema_fallbacks"] += 1
                self.level = max(self.level, SCHEMA_LEVELS.index(level) + 1)
                continue
            if action == "too_long":
                return Result(error=redact(f"the server refused the prompt: {message}", self._key))
            what = f"HTTP {status}" if status else "no answer"
            if action == "fatal":
                self._stop(f"{what}, {FATAL_STATUSES[status]}: {message}")
            if action == "retry" and attempt < self.spec.retries:
                self.counts["retries"] += 1
                await asyncio.sleep(backoff_s(attempt, self.spec.backoff_s, retry_after_s(retry_after)))
                attempt += 1
                continue
            tries = f" after {attempt + 1} attempts" if attempt else ""
            return Result(failed=redact(f"endpoint {self.name}: {what}{tries}: {message}", self._key))

    def _result(self, answer: dict) -> Result:
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        usage = answer.get("usage") or {}
        self.counts["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        self.counts["completion_tokens"] += completion
        self.counts["answers_without_usage"] += not usage
        texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        return Result(texts=texts, finish_reasons=[c.get("finish_reason") or "stop" for c in choices],
                      tokens=completion)

    async def _one(self, request: Request) -> Result:
        """A request's n completions: asked in one call, topped up when the server returns fewer."""
        result = await self._complete(request, request.n)
        while not (result.error or result.failed) and 0 < len(result.texts) < request.n:
            self.counts["top_ups"] += 1
            more = await self._complete(request, request.n - len(result.texts))
            if more.error or more.failed or not more.texts:  # a failure counts as the request's; no more: keep these
                result = more if more.error or more.failed else result
                break
            result = Result(result.texts + more.texts, result.finish_reasons + more.finish_reasons,
                            result.tokens + more.tokens)
        if not (result.error or result.failed or result.texts):
            result = Result(failed=f"endpoint {self.name}: the answer has no choices")
        self.recent.append(result.failed is not None)
        self.counts["failed"] += result.failed is not None
        failures = sum(self.recent)
        if failures > self.spec.max_failure_rate * FAILURE_WINDOW:  # need not wait for 20 outcomes
            self._stop(f"{failures} of the last {len(self.recent)} requests failed after their retries "
                       f"(max_failure_rate {self.spec.max_failure_rate:g}); the latest: {result.failed}")
        return result

    async def chat(self, requests: list[Request]) -> list[Result]:
        if self.stopped:
            raise EndpointStopped(self.stopped)
        # every request runs to its end (a stop makes the waiting ones raise at once), then the first error is raised
        results = await asyncio.gather(*(self._one(r) for r in requests), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results

    def usage(self) -> dict:
        """The endpoint's counts so far (what the stage's stats file and the summary show)."""
        c = self.counts
        return {"model": self.spec.model, "base_url": self.spec.base_url,
                **{k: c[k] for k in ("requests", "retries", "failed", "schema_fallbacks", "top_ups",
                                     "prompt_tokens", "completion_tokens", "answers_without_usage")},
                "http_errors": dict(sorted(self.http_errors.items())),
                "price_prompt_per_mtok": self.spec.price_prompt_per_mtok,
                "price_completion_per_mtok": self.spec.price_completion_per_mtok,
                "cost": cost(c["prompt_tokens"], c["completion_tokens"], self.spec.price_prompt_per_mtok,
                             self.spec.price_completion_per_mtok),
                "stopped": self.stopped}

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class BlockingEndpoint:
    """An endpoint's blocking `chat`, on an event loop of its own (`prefgen calibrate`: one process, no Ray)."""

    def __init__(self, spec: EndpointModel, name: str):
        self.loop, self.engine = asyncio.new_event_loop(), EndpointEngine(spec, name)

    def chat(self, requests: list[Request]) -> list[Result]:
        return self.loop.run_until_complete(self.engine.chat(requests))

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.aclose())
        self.loop.close()

"""The rules of talking to an OpenAI-compatible chat API, as pure functions: what a request's
body is, how an HTTP answer is classified, how long to wait before a retry, and how a failure
is told without the key in it. `endpoint.py` holds the client that applies them.

How an answer is classified (`classify`):
- 200 with choices: done.
- 429, 5xx, 408, 409, a timeout or a lost connection: `retry`, after `Retry-After` when the server
  sends one, else after an exponential backoff (`backoff_s` doubling, at most 60 s). 409 (conflict)
  is transient on OpenAI's API, whose own client retries it too.
- 400 that speaks of the schema / response_format / structured output / guided decoding, on a
  request that carried one: `simplify` (the endpoint drops to a simpler structured output: JSON
  schema -> JSON object -> plain prompt; the task's own parsing validates the answer as always).
- 400 that speaks of the context length (not of `max_tokens` alone): `too_long`, the same "prompt does not fit" result a
  local engine gives, which the tasks already handle.
- 401, 403, 404: `fatal`, errors that would fail every row (a bad key, an unknown model or URL).
- any other 4xx: `failed`, that request alone.
"""

from __future__ import annotations

import email.utils
import json
import re
import time

RETRY_STATUSES = {408, 409, 429}
FATAL_STATUSES = {401: "the API key was refused", 403: "the API key may not use this model or endpoint",
                  404: "unknown model or URL"}
BACKOFF_CAP_S = 60.0
RETRY_AFTER_CAP_S = 300.0
# Structured output, from the most to the least the server must support.
SCHEMA_LEVELS = ("json_schema", "json_object", "none")
_SCHEMA_WORDS = re.compile(r"schema|response_format|structured|guided|json_object|grammar", re.I)
# Words about the prompt not fitting the context; `max_tokens` alone is not among them: a 400 that names
# only it refuses the request's limit (above the model's output cap, or not a valid number), which no
# shorter prompt would cure, so it fails that request with the server's words.
_LENGTH_WORDS = re.compile(r"context length|maximum context|context window|max_model_len|too long", re.I)


def request_body(model: str, messages: list[dict], sampling, n: int, json_schema: dict | None,
                 level: str) -> dict:
    """The JSON body of one chat completion request; `level` is how much structured output to ask for."""
    body = {"model": model, "messages": messages, "n": n, "temperature": sampling.temperature,
            "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}
    if sampling.repetition_penalty != 1.0:
        # Not in OpenAI's API: vLLM's server (and others built on it) take it as an extra body field.
        body["repetition_penalty"] = sampling.repetition_penalty
    if json_schema is not None and level == "json_schema":
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": json_schema, "strict": True}}
    elif json_schema is not None and level == "json_object":
        body["response_format"] = {"type": "json_object"}
    return body


def error_message(body: str) -> str:
    """The server's own words from an error body (OpenAI's `{"error": {"message": ...}}` or plain text)."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return (body or "").strip()[:300]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        return str(err)[:300]
    return str(data)[:300]


def classify(status: int | None, message: str, had_schema: bool) -> str:
    """What to do with an answer: ok, retry, simplify, too_long, fatal or failed (see the module docstring).

    `status` None: no answer (a timeout or a lost connection)."""
    if status is None or status in RETRY_STATUSES or status >= 500:
        return "retry"
    if status == 200:
        return "ok"
    if status in FATAL_STATUSES:
        return "fatal"
    if status in (400, 422) and had_schema and _SCHEMA_WORDS.search(message):
        return "simplify"
    if status in (400, 413, 422) and _LENGTH_WORDS.search(message):
        return "too_long"
    return "failed"


def retry_after_s(header: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (a number, or an HTTP date), capped; None if absent or unreadable."""
    if not header:
        return None
    header = header.strip()
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def backoff_s(attempt: int, base: float, retry_after: float | None) -> float:
    """The wait before retry number `attempt` (0-based): the server's Retry-After, else base * 2**attempt, capped."""
    if retry_after is not None:
        return retry_after
    return min(BACKOFF_CAP_S, base * 2 ** attempt)


def redact(text: str, secret: str | None) -> str:
    """Text with every occurrence of the key (and of its first 8+ characters) replaced."""
    if not secret:
        return text
    text = text.replace(secret, "[key]")
    if len(secret) >= 12:  # servers echo a key's head ("Incorrect API key provided: sk-abc...")
        text = text.replace(secret[:8], "[key]")
    return text


def cost(prompt_tokens: int, completion_tokens: int, prompt_price: float | None,
         completion_price: float | None) -> float | None:
    """The price of the tokens, by the prices per million tokens; None when no price is set."""
    if prompt_price is None and completion_price is None:
        return None
    return (prompt_tokens * (prompt_price or 0.0) + completion_tokens * (completion_price or 0.0)) / 1e6

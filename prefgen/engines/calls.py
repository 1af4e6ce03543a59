"""How a stage's tasks call its engine: the `Task` interface, the engine wrapped for them (calls
counted, run one at a time, or served by the actor's event loop), the roles' chat templates
checked at start, and a role's empty stats.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import Counter
from typing import Protocol

from prefgen.engines.engine import AsyncChatEngine, ChatEngine, Request, Result, template_refusal


class Task(Protocol):
    """What a role does with an engine: fills in the live rows of a batch in place."""

    role: str  # "generate:<name>", "evolve", "judge:<name>"
    dropped: Counter  # outputs that became no candidate, by reason (the stage runs a copy per batch and sums them)

    def run(self, rows: list[dict], engine: ChatEngine) -> None: ...


class CountingEngine:
    """Passes requests through to the engine and counts them (requests, output tokens)."""

    def __init__(self, engine: ChatEngine):
        self.engine, self.requests, self.tokens = engine, 0, 0

    def chat(self, requests: list[Request]) -> list[Result]:
        results = self.engine.chat(requests)
        self.requests += len(requests)
        self.tokens += sum(r.tokens for r in results)
        return results


class SerialEngine:
    """A blocking engine shared by the batches in flight: its calls (`chat`, or a reward model's
    `score`) run one at a time, each in the calling batch's worker thread."""

    def __init__(self, engine):
        self.engine, self.lock = engine, threading.Lock()

    def __getattr__(self, name: str):
        attr = getattr(self.engine, name)
        if not callable(attr):
            return attr

        def serial(*args, **kwargs):
            with self.lock:
                return attr(*args, **kwargs)

        return serial


def is_async(engine) -> bool:
    return inspect.iscoroutinefunction(getattr(engine, "chat", None))


class LoopEngine:
    """The blocking `chat` the tasks call from a worker thread, served by the actor's event loop.

    The requests join the async engine's queue next to those of the other batches in flight."""

    def __init__(self, engine: AsyncChatEngine, loop: asyncio.AbstractEventLoop):
        self.engine, self.loop = engine, loop

    def chat(self, requests: list[Request]) -> list[Result]:
        return asyncio.run_coroutine_threadsafe(self.engine.chat(requests), self.loop).result()


def check_chat_templates(engine, tasks: list[Task]) -> None:
    """Each role renders a conversation of its own shape through the engine's chat template once,
    so a template that refuses it (a system message to a model without that role) raises
    `TemplateRefused` naming the role at engine start, instead of rejecting every row. An engine
    without a tokenizer (a scripted one) is not checked; a task without the check sends nothing
    prefgen wrote (a reward model scores a plain user/assistant exchange)."""
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None:
        return
    for task in tasks:
        check = getattr(task, "check_chat_template", None)
        if check is not None:
            check(lambda messages: template_refusal(tokenizer, messages))


def new_role_stats() -> dict:
    return {"rows": 0, "requests": 0, "output_tokens": 0, "busy_s": 0.0, "dropped": {}}

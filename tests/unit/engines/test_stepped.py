"""`SteppedLLM`'s own logic on a stand-in for vLLM's `LLMEngine` (its four calls): requests of
concurrent callers share the engine's steps, a cancelled call's request is aborted in the engine,
a failed step fails every waiting and later call as a dead engine, and a shutdown stops the
thread and the engine core. The real engine runs under it in the integration tier (every
pipeline run on the CPU build)."""

import asyncio
import sys
import threading
import time
from types import SimpleNamespace

import pytest

import prefgen.engines.stepped as stepped
from prefgen.engines.stepped import SteppedLLM


class EngineDead(Exception):
    pass


class StandInEngine:
    """Finishes one request per step, oldest first, except those whose id starts with `held` (never
    finished: only an abort takes them out); records what the stepping thread asked of it."""

    def __init__(self, fail_at_step: int | None = None, held: str | None = None):
        self.unfinished: list[str] = []
        self.added: list[str] = []
        self.most_at_once, self.aborted, self.steps = 0, [], 0
        self.fail_at_step, self.held, self.core_stopped = fail_at_step, held, False
        self.engine_core = SimpleNamespace(shutdown=self._stop_core)
        self.threads: set[str] = set()

    def _stop_core(self):
        self.core_stopped = True

    def add_request(self, request_id, prompt, params, lora_request=None):
        self.threads.add(threading.current_thread().name)
        if prompt == "refused":
            raise ValueError("prompt too long")
        self.unfinished.append(request_id)
        self.added.append(request_id)
        self.most_at_once = max(self.most_at_once, len(self.unfinished))

    def has_unfinished_requests(self):
        return bool(self.unfinished)

    def abort_request(self, request_ids):
        self.aborted += request_ids
        self.unfinished = [r for r in self.unfinished if r not in request_ids]

    def step(self):
        self.threads.add(threading.current_thread().name)
        self.steps += 1
        if self.steps == self.fail_at_step:
            raise RuntimeError("out of memory")
        time.sleep(0.02)
        finishable = [r for r in self.unfinished if not (self.held and r.startswith(self.held))]
        if not finishable:
            return []
        done = finishable[0]
        self.unfinished.remove(done)
        return [SimpleNamespace(request_id=done, finished=True, text=f"output of {done}")]


@pytest.fixture(autouse=True)
def without_vllm(monkeypatch):
    monkeypatch.setattr(stepped, "_final_only", lambda params: None)
    monkeypatch.setattr(stepped, "_dead", lambda cause: EngineDead(str(cause)))


async def final(llm, prompt, request_id):
    return [out async for out in llm.generate(prompt, SimpleNamespace(), request_id)]


def test_concurrent_callers_share_the_engines_steps_and_each_gets_its_own_output():
    engine = StandInEngine()
    llm = SteppedLLM(lambda: engine)

    async def two_calls():
        first = asyncio.gather(*(final(llm, "p", f"a{i}") for i in range(3)))
        second = asyncio.gather(*(final(llm, "p", f"b{i}") for i in range(3)))
        return await asyncio.gather(first, second)

    first, second = asyncio.run(two_calls())
    assert [o[0].text for o in first + second] == [f"output of {r}" for r in ("a0", "a1", "a2", "b0", "b1", "b2")]
    assert engine.most_at_once > 3, "the two calls' requests never were in the engine together"
    assert engine.threads == {"prefgen-vllm-steps"}, "the engine was called from another thread"
    llm.shutdown(5)
    assert engine.core_stopped and not llm._thread.is_alive()


def test_a_refused_request_fails_alone():
    llm = SteppedLLM(StandInEngine)

    async def calls():
        return await asyncio.gather(final(llm, "refused", "x"), final(llm, "p", "y"), return_exceptions=True)

    refused, fine = asyncio.run(calls())
    assert isinstance(refused, ValueError) and fine[0].text == "output of y"
    llm.shutdown(5)


def test_a_cancelled_call_is_aborted_in_the_engine():
    """The cancelled requests never finish on their own, so only an abort takes them out of the engine:
    no timing decides the outcome."""
    engine = StandInEngine(held="gone")
    llm = SteppedLLM(lambda: engine)
    gone_ids = {f"gone{i}" for i in range(5)}

    async def cancel_one():
        keep = asyncio.ensure_future(final(llm, "p", "keep"))
        gone = [asyncio.ensure_future(final(llm, "p", r)) for r in sorted(gone_ids)]
        while not gone_ids <= set(engine.added):  # every request is in the engine before the cancel
            await asyncio.sleep(0.005)
        for task in gone:
            task.cancel()
        await asyncio.gather(*gone, return_exceptions=True)
        return await keep

    assert asyncio.run(cancel_one())[0].text == "output of keep"
    deadline = time.monotonic() + 10
    while set(engine.aborted) != gone_ids and time.monotonic() < deadline:
        time.sleep(0.01)
    llm.shutdown(5)
    assert set(engine.aborted) == gone_ids, engine.aborted
    assert engine.unfinished == [], "a cancelled request was left in the engine"


def test_a_failed_step_fails_every_waiting_and_later_call_as_a_dead_engine():
    llm = SteppedLLM(lambda: StandInEngine(fail_at_step=2))

    async def calls():
        return await asyncio.gather(*(final(llm, "p", f"r{i}") for i in range(3)), return_exceptions=True)

    first, *rest = asyncio.run(calls())
    assert first[0].text == "output of r0"
    assert all(isinstance(r, EngineDead) and "out of memory" in str(r) for r in rest), rest
    with pytest.raises(EngineDead):
        asyncio.run(final(llm, "p", "later"))
    llm.shutdown(5)


def test_the_stepping_thread_computes_with_the_building_threads_torch_threads(monkeypatch):
    """OpenMP's thread count is per thread: a new thread would start from the process's initial
    count (1 in a 1-CPU Ray actor) and vLLM's CPU attention then refuses the batch's metadata."""
    calls = []
    record = lambda n: calls.append((threading.current_thread().name, n))  # noqa: E731
    # vLLM's CPU worker turns torch.set_num_threads into a no-op: the binding underneath must be used
    fake_torch = SimpleNamespace(get_num_threads=lambda: 2, set_num_threads=lambda n: None,
                                 _C=SimpleNamespace(set_num_threads=record))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    llm = SteppedLLM(StandInEngine)
    assert asyncio.run(final(llm, "p", "x"))[0].text == "output of x"
    llm.shutdown(5)
    assert calls == [("prefgen-vllm-steps", 2)]


def test_the_engine_is_built_in_the_stepping_thread_and_a_failed_build_raises_in_the_constructor():
    built_in = []

    def build():
        built_in.append(threading.current_thread().name)
        return StandInEngine()

    SteppedLLM(build).shutdown(5)
    assert built_in == ["prefgen-vllm-steps"]

    def fails():
        raise MemoryError("no room for the KV cache")

    with pytest.raises(MemoryError, match="KV cache"):
        SteppedLLM(fails)


def test_each_step_is_logged_with_the_schedulers_counts():
    engine = StandInEngine()
    counts = iter([(2, 3), (1, 0)] + [(0, 0)] * 10)
    engine.engine_core.engine_core = SimpleNamespace(scheduler=SimpleNamespace(get_request_counts=lambda: next(counts)))
    llm = SteppedLLM(lambda: engine)

    async def calls():
        return await asyncio.gather(*(final(llm, "p", f"r{i}") for i in range(2)))

    asyncio.run(calls())
    llm.shutdown(5)
    summary = llm.steps.summary()
    assert summary["steps"] == engine.steps == 2
    assert summary["max_running"] == 2 and summary["max_waiting"] == 3
    assert 0.3 < summary["waiting_share"] < 0.7, summary  # one of two steps of about equal length had some waiting
    assert summary["timeline"][0][0] == 0 and 1.0 <= summary["timeline"][0][1] <= 2.0

"""The adapter gate: requests of one adapter (or the base) in the engine at a time, in arrival order."""

import asyncio

import pytest

from prefgen.engines.adapter_gate import AdapterGate


class Engine:
    """Records which adapters are in it at once; each request stays until released."""

    def __init__(self):
        self.inside: list[str | None] = []
        self.mixed = False
        self.order: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def serve(self, gate: AdapterGate, name: str, adapter: str | None):
        self.release[name] = asyncio.Event()
        async with gate.admitted(adapter):
            self.inside.append(adapter)
            self.mixed |= len(set(self.inside)) > 1
            self.order.append(name)
            await self.release[name].wait()
            self.inside.remove(adapter)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_one_adapter_at_a_time_and_a_waiting_adapter_is_not_overtaken():
    async def main():
        gate, engine = AdapterGate(), Engine()
        tasks = [asyncio.ensure_future(engine.serve(gate, "base1", None)),
                 asyncio.ensure_future(engine.serve(gate, "base2", None))]
        await settle()
        assert engine.order == ["base1", "base2"]  # the same adapter (the base) batches together
        tasks.append(asyncio.ensure_future(engine.serve(gate, "lora1", "a")))
        await settle()
        tasks.append(asyncio.ensure_future(engine.serve(gate, "base3", None)))  # behind the waiting adapter
        tasks.append(asyncio.ensure_future(engine.serve(gate, "lora2", "a")))
        await settle()
        assert engine.order == ["base1", "base2"]
        engine.release["base1"].set()
        await settle()
        assert engine.order == ["base1", "base2"]  # base2 still in: the adapter waits
        engine.release["base2"].set()
        await settle()
        assert engine.order == ["base1", "base2", "lora1", "lora2"]  # the adapter's waiting requests go in together
        engine.release["lora1"].set()
        engine.release["lora2"].set()
        await settle()
        assert engine.order[-1] == "base3"
        engine.release["base3"].set()
        await asyncio.gather(*tasks)
        assert not engine.mixed and gate.active == 0 and not gate.waiting

    asyncio.run(main())


def test_a_cancelled_request_gives_its_place_back():
    async def main():
        gate, engine = AdapterGate(), Engine()
        first = asyncio.ensure_future(engine.serve(gate, "base", None))
        await settle()
        waiting = asyncio.ensure_future(engine.serve(gate, "lora", "a"))
        await settle()
        waiting.cancel()  # given up while it waits
        await settle()
        engine.release["base"].set()
        await first
        other = asyncio.ensure_future(engine.serve(gate, "other", "b"))
        await settle()
        assert engine.order == ["base", "other"]  # nothing waits on the cancelled request
        engine.release["other"].set()
        await other
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert gate.active == 0 and not gate.waiting

    asyncio.run(main())


def test_a_request_that_fails_in_the_engine_leaves_the_gate():
    async def main():
        gate = AdapterGate()
        with pytest.raises(ValueError):
            async with gate.admitted("a"):
                raise ValueError("engine refused it")
        async with gate.admitted(None):  # the base is let in at once
            assert gate.active == 1 and gate.current is None

    asyncio.run(main())
